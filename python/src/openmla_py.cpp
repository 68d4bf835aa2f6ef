// openmla._openmla: the Python binding of the C++ API.
//
// This file only converts: Python arrays (anything nanobind can import through DLPack or the
// buffer protocol: PyTorch tensors, NumPy arrays, ...) become zero-copy TensorViews with their
// strides, calls go to the library with the GIL released, and a failed Status becomes an
// exception carrying the library's message (invalid argument -> ValueError, wrong dtype ->
// TypeError, everything else -> RuntimeError). Shapes, strides, dtypes and values
// are validated by the library alone. The `openmla` package (python/openmla) builds the
// FlashMLA-compatible API on top of these functions.
//
// An array argument may also be a pair (array, dtype_name): the array's memory is then taken as
// elements of `dtype_name` ("bfloat16", "float8_e4m3fn", ...) of the same size. The package uses
// this for NumPy arrays of ml_dtypes types, which neither DLPack nor the buffer protocol carry.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "formats/kv_format.h"
#include "openmla/compressor.h"
#include "openmla/indexer.h"
#include "openmla/openmla.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using openmla::DType;
using openmla::Status;
using openmla::StatusCode;
using openmla::TensorView;

/// Raises the Python exception matching a failed Status.
void throw_if_error(const Status& status) {
  if (status.ok()) return;
  const std::string& message = status.message();
  if (status.code() == StatusCode::kWrongDtype) throw nb::type_error(message.c_str());
  if (status.code() == StatusCode::kInvalidArgument) throw nb::value_error(message.c_str());
  throw std::runtime_error(status.to_string());
}

bool dtype_from_name(const std::string& name, DType* dtype) {
  static const DType all[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kI32,
                              DType::kI64, DType::kU8,  DType::kI8,   DType::kE4M3};
  for (DType d : all) {
    if (name == openmla::dtype_name(d)) {
      *dtype = d;
      return true;
    }
  }
  return false;
}

bool dtype_from_dlpack(nb::dlpack::dtype t, DType* dtype) {
  using Code = nb::dlpack::dtype_code;
  if (t.lanes != 1) return false;
  const auto code = static_cast<Code>(t.code);
  if (code == Code::Float && t.bits == 32) *dtype = DType::kF32;
  else if (code == Code::Float && t.bits == 16) *dtype = DType::kF16;
  else if (code == Code::Bfloat && t.bits == 16) *dtype = DType::kBF16;
  else if (code == Code::Int && t.bits == 32) *dtype = DType::kI32;
  else if (code == Code::Int && t.bits == 64) *dtype = DType::kI64;
  else if (code == Code::UInt && t.bits == 8) *dtype = DType::kU8;
  else if (code == Code::Int && t.bits == 8) *dtype = DType::kI8;
  else if (code == Code::Float8_E4M3FN && t.bits == 8) *dtype = DType::kE4M3;
  else return false;
  return true;
}

std::string dlpack_dtype_string(nb::dlpack::dtype t) {
  return "DLPack type code " + std::to_string(t.code) + " with " + std::to_string(t.bits) +
         " bits";
}

/// Imports the arrays of one call and keeps them alive until the call returns.
class Converter {
 public:
  /// A tensor the library reads. None gives an absent (default) TensorView.
  TensorView input(nb::handle obj, const char* name) { return convert<nb::ro>(obj, name, ro_); }
  /// A tensor the library writes; it must be writable.
  TensorView output(nb::handle obj, const char* name) { return convert<>(obj, name, rw_); }

 private:
  template <typename... Flags>
  TensorView convert(nb::handle obj, const char* name,
                     std::vector<nb::ndarray<Flags...>>& keep) {
    TensorView view;
    if (!obj.is_valid() || obj.is_none()) return view;
    nb::handle array = obj;
    std::optional<std::string> dtype_name;
    if (nb::isinstance<nb::tuple>(obj)) {
      nb::tuple pair = nb::borrow<nb::tuple>(obj);
      if (pair.size() != 2 || !nb::isinstance<nb::str>(pair[1])) {
        throw nb::type_error((std::string(name) +
                              ": expected an array or an (array, dtype name) pair").c_str());
      }
      array = pair[0];
      dtype_name = nb::cast<std::string>(pair[1]);
    }
    nb::ndarray<Flags...> nd;
    if (!nb::try_cast(array, nd, false)) {
      const std::string type_name = nb::cast<std::string>(nb::type_name(array.type()));
      throw nb::type_error((std::string(name) + ": cannot view a " + type_name +
                            " as an array (need DLPack or the buffer protocol" +
                            (sizeof...(Flags) == 0 ? ", and a writable array" : "") + ")")
                               .c_str());
    }
    if (nd.ndim() > static_cast<size_t>(openmla::kMaxDims)) {
      throw nb::value_error((std::string(name) + ": at most " +
                             std::to_string(openmla::kMaxDims) + " dimensions are supported, got " +
                             std::to_string(nd.ndim())).c_str());
    }
    if (dtype_name) {
      if (!dtype_from_name(*dtype_name, &view.dtype))
        throw nb::type_error((std::string(name) + ": unknown dtype name " + *dtype_name).c_str());
      if (openmla::dtype_size(view.dtype) != nd.itemsize()) {
        throw nb::type_error((std::string(name) + ": a " + *dtype_name +
                              " view needs elements of " +
                              std::to_string(openmla::dtype_size(view.dtype)) + " bytes, got " +
                              std::to_string(nd.itemsize())).c_str());
      }
    } else if (!dtype_from_dlpack(nd.dtype(), &view.dtype)) {
      throw nb::type_error((std::string(name) + ": unsupported element type (" +
                            dlpack_dtype_string(nd.dtype()) +
                            "); openmla takes bfloat16, float16, float32, int32, int64, uint8, "
                            "int8 and float8_e4m3fn")
                               .c_str());
    }
    switch (nd.device_type()) {
      case nb::device::cpu::value:
      case nb::device::cuda_host::value: view.device = openmla::Device::kCpu; break;
      case nb::device::cuda::value:
      case nb::device::cuda_managed::value: view.device = openmla::Device::kCuda; break;
      default:
        throw std::runtime_error(std::string(name) + ": arrays on device type " +
                                 std::to_string(nd.device_type()) + " are not supported");
    }
    view.data = const_cast<void*>(static_cast<const void*>(nd.data()));
    view.ndim = static_cast<int32_t>(nd.ndim());
    for (size_t i = 0; i < nd.ndim(); ++i) {
      view.shape[i] = static_cast<int64_t>(nd.shape(i));
      view.stride[i] = static_cast<int64_t>(nd.stride(i));
    }
    // Exporters disagree on the strides of an array without elements (some give zeros); they
    // address nothing, so report row-major ones.
    if (nd.size() == 0) {
      int64_t stride = 1;
      for (int i = view.ndim - 1; i >= 0; --i) {
        view.stride[i] = stride;
        stride *= view.shape[i] > 0 ? view.shape[i] : 1;
      }
    }
    keep.push_back(std::move(nd));
    return view;
  }

  std::vector<nb::ndarray<nb::ro>> ro_;
  std::vector<nb::ndarray<>> rw_;
};

/// Options from the keyword arguments; `kernel` must outlive the returned value.
openmla::Options make_options(int num_threads, const std::optional<std::string>& kernel) {
  openmla::Options options;
  options.num_threads = num_threads;
  options.kernel = kernel ? kernel->c_str() : nullptr;
  return options;
}

/// One-shot call when `plan` is None; otherwise plans into `plan` if it is empty, then runs it.
template <typename Args>
Status plan_and_run(const Args& args, const openmla::Options& options, openmla::Plan* plan,
                    Status (*once)(const Args&, const openmla::Options&),
                    Status (*make)(const Args&, const openmla::Options&, openmla::Plan*),
                    Status (*run)(const openmla::Plan&, const Args&)) {
  nb::gil_scoped_release release;
  if (plan == nullptr) return once(args, options);
  if (!plan->valid()) {
    Status status = make(args, options, plan);
    if (!status.ok()) return status;
  }
  return run(*plan, args);
}

nb::object optional_string(const char* s) {
  if (s == nullptr) return nb::none();
  return nb::str(s);
}

}  // namespace

/// The lightning indexer's functions (defined at the end of this file).
static void bind_indexer(nb::module_& m);
/// The KV compressor's functions (defined at the end of this file).
static void bind_compressor(nb::module_& m);

NB_MODULE(_openmla, m) {
  m.doc() = "Native binding of the openmla C++ library (use the `openmla` package instead).";

  m.def("version", [] { return std::string(openmla::version()); },
        "Version string of the C++ library.");
  m.def("cpu_features", [] { return openmla::cpu_features_string(); },
        "CPU features detected at start-up and the ISA cap in force.");
  m.def(
      "list_kernels",
      [] {
        const std::size_t n = openmla::list_kernels(nullptr, 0);
        std::vector<openmla::KernelInfo> infos(n);
        openmla::list_kernels(infos.data(), infos.size());
        std::vector<std::tuple<std::string, std::string, std::string, bool>> result;
        for (const openmla::KernelInfo& k : infos)
          result.emplace_back(k.name, openmla::op_name(k.op), k.isa, k.runnable);
        return result;
      },
      "Registered kernels in priority order as (name, op, isa, runnable) tuples.");

  nb::enum_<openmla::KvFormat>(m, "KvFormat")
      .value("BF16", openmla::KvFormat::kBF16)
      .value("V32", openmla::KvFormat::kV32)
      .value("MODEL1", openmla::KvFormat::kModel1);

  nb::class_<openmla::Plan>(m, "Plan",
                            "A kernel choice and work split made on first use, reused while the "
                            "shapes stay the same.")
      .def(nb::init<>())
      .def_prop_ro("valid", &openmla::Plan::valid)
      .def_prop_ro("op", [](const openmla::Plan& p) {
        return p.valid() ? optional_string(openmla::op_name(p.op())) : nb::none();
      })
      .def_prop_ro("kernel_name", [](const openmla::Plan& p) { return std::string(p.kernel_name()); })
      .def_prop_ro("num_threads", &openmla::Plan::num_threads)
      .def_prop_ro("num_splits", &openmla::Plan::num_splits)
      .def("__repr__", [](const openmla::Plan& p) {
        if (!p.valid()) return std::string("Plan(empty)");
        return std::string("Plan(op=") + openmla::op_name(p.op()) + ", kernel=" + p.kernel_name() +
               ", num_threads=" + std::to_string(p.num_threads()) +
               ", num_splits=" + std::to_string(p.num_splits()) + ")";
      });

  m.def(
      "sparse_decode",
      [](nb::handle q, nb::handle kv_cache, nb::handle indices, nb::handle out, nb::handle lse,
         nb::handle topk_length, nb::handle attn_sink, nb::handle extra_kv_cache,
         nb::handle extra_indices, nb::handle extra_topk_length, float softmax_scale,
         int64_t head_dim_v, openmla::Plan* plan, int num_threads,
         std::optional<std::string> kernel) {
        Converter c;
        openmla::SparseDecodeArgs a;
        a.q = c.input(q, "q");
        a.kv_cache = c.input(kv_cache, "kv_cache");
        a.indices = c.input(indices, "indices");
        a.topk_length = c.input(topk_length, "topk_length");
        a.attn_sink = c.input(attn_sink, "attn_sink");
        a.extra_kv_cache = c.input(extra_kv_cache, "extra_kv_cache");
        a.extra_indices = c.input(extra_indices, "extra_indices");
        a.extra_topk_length = c.input(extra_topk_length, "extra_topk_length");
        a.softmax_scale = softmax_scale;
        a.head_dim_v = head_dim_v;
        a.out = c.output(out, "out");
        a.lse = c.output(lse, "lse");
        throw_if_error(plan_and_run(a, make_options(num_threads, kernel), plan,
                                    &openmla::sparse_decode, &openmla::plan_sparse_decode,
                                    &openmla::run_sparse_decode));
      },
      "q"_a, "kv_cache"_a, "indices"_a, "out"_a, "lse"_a, "topk_length"_a = nb::none(),
      "attn_sink"_a = nb::none(), "extra_kv_cache"_a = nb::none(), "extra_indices"_a = nb::none(),
      "extra_topk_length"_a = nb::none(), "softmax_scale"_a = 0.0f, "head_dim_v"_a = 512,
      "plan"_a.none() = nb::none(), "num_threads"_a = 0, "kernel"_a.none() = nb::none(),
      "openmla::sparse_decode: writes out and lse.");

  m.def(
      "dense_decode",
      [](nb::handle q, nb::handle kv_cache, nb::handle block_table, nb::handle cache_seqlens,
         nb::handle out, nb::handle lse, float softmax_scale, bool causal, int64_t head_dim_v,
         openmla::Plan* plan, int num_threads, std::optional<std::string> kernel) {
        Converter c;
        openmla::DenseDecodeArgs a;
        a.q = c.input(q, "q");
        a.kv_cache = c.input(kv_cache, "kv_cache");
        a.block_table = c.input(block_table, "block_table");
        a.cache_seqlens = c.input(cache_seqlens, "cache_seqlens");
        a.softmax_scale = softmax_scale;
        a.causal = causal;
        a.head_dim_v = head_dim_v;
        a.out = c.output(out, "out");
        a.lse = c.output(lse, "lse");
        throw_if_error(plan_and_run(a, make_options(num_threads, kernel), plan,
                                    &openmla::dense_decode, &openmla::plan_dense_decode,
                                    &openmla::run_dense_decode));
      },
      "q"_a, "kv_cache"_a, "block_table"_a, "cache_seqlens"_a, "out"_a, "lse"_a,
      "softmax_scale"_a = 0.0f, "causal"_a = false, "head_dim_v"_a = 512,
      "plan"_a.none() = nb::none(), "num_threads"_a = 0, "kernel"_a.none() = nb::none(),
      "openmla::dense_decode: writes out and lse.");

  m.def(
      "sparse_prefill",
      [](nb::handle q, nb::handle kv, nb::handle indices, nb::handle out, nb::handle max_logits,
         nb::handle lse, nb::handle topk_length, nb::handle attn_sink, float softmax_scale,
         int64_t head_dim_v, openmla::Plan* plan, int num_threads,
         std::optional<std::string> kernel) {
        Converter c;
        openmla::SparsePrefillArgs a;
        a.q = c.input(q, "q");
        a.kv = c.input(kv, "kv");
        a.indices = c.input(indices, "indices");
        a.topk_length = c.input(topk_length, "topk_length");
        a.attn_sink = c.input(attn_sink, "attn_sink");
        a.softmax_scale = softmax_scale;
        a.head_dim_v = head_dim_v;
        a.out = c.output(out, "out");
        a.max_logits = c.output(max_logits, "max_logits");
        a.lse = c.output(lse, "lse");
        throw_if_error(plan_and_run(a, make_options(num_threads, kernel), plan,
                                    &openmla::sparse_prefill, &openmla::plan_sparse_prefill,
                                    &openmla::run_sparse_prefill));
      },
      "q"_a, "kv"_a, "indices"_a, "out"_a, "max_logits"_a, "lse"_a, "topk_length"_a = nb::none(),
      "attn_sink"_a = nb::none(), "softmax_scale"_a = 0.0f, "head_dim_v"_a = 512,
      "plan"_a.none() = nb::none(), "num_threads"_a = 0, "kernel"_a.none() = nb::none(),
      "openmla::sparse_prefill: writes out, max_logits and lse.");

  m.def(
      "mhc_pre",
      [](nb::handle x, nb::handle hc_fn, nb::handle hc_scale, nb::handle hc_base, nb::handle y,
         nb::handle post, nb::handle comb, int64_t sinkhorn_iters, float rms_eps, float hc_eps,
         openmla::Plan* plan, int num_threads, std::optional<std::string> kernel) {
        Converter c;
        openmla::MhcPreArgs a;
        a.x = c.input(x, "x");
        a.hc_fn = c.input(hc_fn, "hc_fn");
        a.hc_scale = c.input(hc_scale, "hc_scale");
        a.hc_base = c.input(hc_base, "hc_base");
        a.sinkhorn_iters = sinkhorn_iters;
        a.rms_eps = rms_eps;
        a.hc_eps = hc_eps;
        a.y = c.output(y, "y");
        a.post = c.output(post, "post");
        a.comb = c.output(comb, "comb");
        throw_if_error(plan_and_run(a, make_options(num_threads, kernel), plan, &openmla::mhc_pre,
                                    &openmla::plan_mhc_pre, &openmla::run_mhc_pre));
      },
      "x"_a, "hc_fn"_a, "hc_scale"_a, "hc_base"_a, "y"_a, "post"_a, "comb"_a,
      "sinkhorn_iters"_a = 20, "rms_eps"_a = 1e-6f, "hc_eps"_a = 1e-6f,
      "plan"_a.none() = nb::none(), "num_threads"_a = 0, "kernel"_a.none() = nb::none(),
      "openmla::mhc_pre: writes y, post and comb.");
  m.def(
      "mhc_post",
      [](nb::handle x, nb::handle residual, nb::handle post, nb::handle comb, nb::handle out,
         openmla::Plan* plan, int num_threads, std::optional<std::string> kernel) {
        Converter c;
        openmla::MhcPostArgs a;
        a.x = c.input(x, "x");
        a.residual = c.input(residual, "residual");
        a.post = c.input(post, "post");
        a.comb = c.input(comb, "comb");
        a.out = c.output(out, "out");
        throw_if_error(plan_and_run(a, make_options(num_threads, kernel), plan,
                                    &openmla::mhc_post, &openmla::plan_mhc_post,
                                    &openmla::run_mhc_post));
      },
      "x"_a, "residual"_a, "post"_a, "comb"_a, "out"_a, "plan"_a.none() = nb::none(),
      "num_threads"_a = 0, "kernel"_a.none() = nb::none(), "openmla::mhc_post: writes out.");
  m.def(
      "mhc_head",
      [](nb::handle x, nb::handle hc_fn, nb::handle hc_scale, nb::handle hc_base, nb::handle out,
         float rms_eps, float hc_eps, openmla::Plan* plan, int num_threads,
         std::optional<std::string> kernel) {
        Converter c;
        openmla::MhcHeadArgs a;
        a.x = c.input(x, "x");
        a.hc_fn = c.input(hc_fn, "hc_fn");
        a.hc_scale = c.input(hc_scale, "hc_scale");
        a.hc_base = c.input(hc_base, "hc_base");
        a.rms_eps = rms_eps;
        a.hc_eps = hc_eps;
        a.out = c.output(out, "out");
        throw_if_error(plan_and_run(a, make_options(num_threads, kernel), plan,
                                    &openmla::mhc_head, &openmla::plan_mhc_head,
                                    &openmla::run_mhc_head));
      },
      "x"_a, "hc_fn"_a, "hc_scale"_a, "hc_base"_a, "out"_a, "rms_eps"_a = 1e-6f,
      "hc_eps"_a = 1e-6f, "plan"_a.none() = nb::none(), "num_threads"_a = 0,
      "kernel"_a.none() = nb::none(), "openmla::mhc_head: writes out.");
  m.def(
      "engram_gate",
      [](nb::handle h, nb::handle kv, nb::handle gate_weight, nb::handle out, float eps,
         float clamp_value, openmla::Plan* plan, int num_threads,
         std::optional<std::string> kernel) {
        Converter c;
        openmla::EngramGateArgs a;
        a.h = c.input(h, "h");
        a.kv = c.input(kv, "kv");
        a.gate_weight = c.input(gate_weight, "gate_weight");
        a.eps = eps;
        a.clamp_value = clamp_value;
        a.out = c.output(out, "out");
        throw_if_error(plan_and_run(a, make_options(num_threads, kernel), plan,
                                    &openmla::engram_gate, &openmla::plan_engram_gate,
                                    &openmla::run_engram_gate));
      },
      "h"_a, "kv"_a, "gate_weight"_a, "out"_a, "eps"_a = 1e-6f, "clamp_value"_a = 1e-6f,
      "plan"_a.none() = nb::none(), "num_threads"_a = 0, "kernel"_a.none() = nb::none(),
      "openmla::engram_gate: writes out (which may be h).");
  m.def(
      "engram_hash",
      [](nb::handle input_ids, nb::handle multipliers, nb::handle primes, int64_t pad_id,
         nb::handle out, int num_threads) {
        Converter c;
        const TensorView ids = c.input(input_ids, "input_ids");
        const TensorView m = c.input(multipliers, "multipliers");
        const TensorView p = c.input(primes, "primes");
        const TensorView o = c.output(out, "out");
        Status status;
        {
          nb::gil_scoped_release release;
          status = openmla::engram_hash(ids, m, p, pad_id, o, make_options(num_threads, {}));
        }
        throw_if_error(status);
      },
      "input_ids"_a, "multipliers"_a, "primes"_a, "pad_id"_a, "out"_a, "num_threads"_a = 0);
  m.def(
      "engram_embed",
      [](nb::handle table, nb::handle hash_ids, nb::handle out, int num_threads) {
        Converter c;
        const TensorView t = c.input(table, "table");
        const TensorView i = c.input(hash_ids, "hash_ids");
        const TensorView o = c.output(out, "out");
        Status status;
        {
          nb::gil_scoped_release release;
          status = openmla::engram_embed(t, i, o, make_options(num_threads, {}));
        }
        throw_if_error(status);
      },
      "table"_a, "hash_ids"_a, "out"_a, "num_threads"_a = 0);

  m.def(
      "kv_layout",
      [] {
        using namespace openmla::kv_layout;
        nb::dict d;
        d["rope_dim"] = kRopeDim;
        d["v32_head_dim"] = kV32HeadDim;
        d["v32_nope_dim"] = kV32NopeDim;
        d["v32_tile"] = kV32Tile;
        d["v32_num_tiles"] = kV32NumTiles;
        d["v32_scales_offset"] = kV32ScalesOffset;
        d["v32_rope_offset"] = kV32RopeOffset;
        d["v32_record_bytes"] = kV32RecordBytes;
        d["model1_head_dim"] = kModel1HeadDim;
        d["model1_nope_dim"] = kModel1NopeDim;
        d["model1_tile"] = kModel1Tile;
        d["model1_num_tiles"] = kModel1NumTiles;
        d["model1_rope_offset"] = kModel1RopeOffset;
        d["model1_record_bytes"] = kModel1RecordBytes;
        d["model1_scale_bytes"] = kModel1ScaleBytes;
        d["model1_view_bytes"] = kModel1ViewBytes;
        d["model1_page_align"] = kModel1PageAlign;
        return d;
      },
      "The FP8 token-record layouts (src/formats/kv_format.h kv_layout) as a dict of ints.");
  m.def(
      "kv_bytes_per_token",
      [](openmla::KvFormat format, int64_t head_dim) {
        int64_t bytes = 0;
        throw_if_error(openmla::kv_bytes_per_token(format, head_dim, &bytes));
        return bytes;
      },
      "format"_a, "head_dim"_a = 0);
  m.def(
      "kv_page_bytes",
      [](openmla::KvFormat format, int64_t page_size, int64_t head_dim, int64_t heads_kv) {
        int64_t bytes = 0;
        throw_if_error(openmla::kv_page_bytes(format, page_size, head_dim, heads_kv, &bytes));
        return bytes;
      },
      "format"_a, "page_size"_a, "head_dim"_a = 0, "heads_kv"_a = 1);
  m.def(
      "fp8_format_for_head_dim",
      [](int64_t head_dim) {
        openmla::KvFormat format{};
        throw_if_error(openmla::fp8_format_for_head_dim(head_dim, &format));
        return format;
      },
      "head_dim"_a);

  m.def(
      "quantize_kv_cache",
      [](nb::handle src, openmla::KvFormat format, nb::handle dst, int num_threads) {
        Converter c;
        const TensorView s = c.input(src, "src");
        const TensorView d = c.output(dst, "dst");
        Status status;
        {
          nb::gil_scoped_release release;
          status = openmla::quantize_kv_cache(s, format, d, make_options(num_threads, {}));
        }
        throw_if_error(status);
      },
      "src"_a, "format"_a, "dst"_a, "num_threads"_a = 0);
  m.def(
      "dequantize_kv_cache",
      [](nb::handle src, openmla::KvFormat format, nb::handle dst, int num_threads) {
        Converter c;
        const TensorView s = c.input(src, "src");
        const TensorView d = c.output(dst, "dst");
        Status status;
        {
          nb::gil_scoped_release release;
          status = openmla::dequantize_kv_cache(s, format, d, make_options(num_threads, {}));
        }
        throw_if_error(status);
      },
      "src"_a, "format"_a, "dst"_a, "num_threads"_a = 0);
  m.def(
      "write_kv_tokens",
      [](nb::handle latents, nb::handle slot_mapping, openmla::KvFormat format, nb::handle cache) {
        Converter c;
        const TensorView l = c.input(latents, "latents");
        const TensorView s = c.input(slot_mapping, "slot_mapping");
        const TensorView k = c.output(cache, "cache");
        Status status;
        {
          nb::gil_scoped_release release;
          status = openmla::write_kv_tokens(l, s, format, k);
        }
        throw_if_error(status);
      },
      "latents"_a, "slot_mapping"_a, "format"_a, "cache"_a);
  m.def(
      "abs_indices_to_cache_indices",
      [](nb::handle abs_indices, nb::handle block_table, int64_t page_size, nb::handle out) {
        Converter c;
        const TensorView a = c.input(abs_indices, "abs_indices");
        const TensorView b = c.input(block_table, "block_table");
        const TensorView o = c.output(out, "out");
        Status status;
        {
          nb::gil_scoped_release release;
          status = openmla::abs_indices_to_cache_indices(a, b, page_size, o);
        }
        throw_if_error(status);
      },
      "abs_indices"_a, "block_table"_a, "page_size"_a, "out"_a);

  bind_indexer(m);
  bind_compressor(m);
}

// ---- lightning indexer (indexer_cache.h, indexer.h)

namespace {

/// Runs a Status-returning library call with the GIL released.
template <typename Call>
void call_released(Call&& call) {
  Status status;
  {
    nb::gil_scoped_release release;
    status = call();
  }
  throw_if_error(status);
}

openmla::PagedMqaLogitsArgs paged_logits_args(Converter& c, nb::handle q, nb::handle kv_cache,
                                              openmla::IndexerKeyFormat format, nb::handle weights,
                                              nb::handle context_lens, nb::handle block_table) {
  openmla::PagedMqaLogitsArgs a;
  a.q = c.input(q, "q");
  a.kv_cache = c.input(kv_cache, "kv_cache");
  a.format = format;
  a.weights = c.input(weights, "weights");
  a.context_lens = c.input(context_lens, "context_lens");
  a.block_table = c.input(block_table, "block_table");
  return a;
}

}  // namespace

static void bind_indexer(nb::module_& m) {
  nb::enum_<openmla::IndexerKeyFormat>(m, "IndexerKeyFormat")
      .value("FP8", openmla::IndexerKeyFormat::kFp8)
      .value("FP4", openmla::IndexerKeyFormat::kFp4);
  m.def("indexer_key_bytes_per_token", &openmla::indexer_key_bytes_per_token, "format"_a);
  m.def(
      "indexer_write_keys",
      [](nb::handle keys, nb::handle slot_mapping, openmla::IndexerKeyFormat format,
         nb::handle cache) {
        Converter c;
        const TensorView k = c.input(keys, "keys");
        const TensorView s = c.input(slot_mapping, "slot_mapping");
        const TensorView out = c.output(cache, "cache");
        call_released([&] { return openmla::indexer_write_keys(k, s, format, out); });
      },
      "keys"_a, "slot_mapping"_a, "format"_a, "cache"_a);
  m.def(
      "indexer_quantize_keys",
      [](nb::handle keys, openmla::IndexerKeyFormat format, nb::handle codes, nb::handle scales) {
        Converter c;
        const TensorView k = c.input(keys, "keys");
        const TensorView out_codes = c.output(codes, "codes");
        const TensorView out_scales = c.output(scales, "scales");
        call_released(
            [&] { return openmla::indexer_quantize_keys(k, format, out_codes, out_scales); });
      },
      "keys"_a, "format"_a, "codes"_a, "scales"_a);
  m.def(
      "indexer_dequantize_cache",
      [](nb::handle cache, openmla::IndexerKeyFormat format, nb::handle keys) {
        Converter c;
        const TensorView in = c.input(cache, "cache");
        const TensorView out = c.output(keys, "keys");
        call_released([&] { return openmla::indexer_dequantize_cache(in, format, out); });
      },
      "cache"_a, "format"_a, "keys"_a);

  m.def(
      "mqa_logits",
      [](nb::handle q, nb::handle k, nb::handle k_scale, nb::handle weights, nb::handle ks,
         nb::handle ke, nb::handle logits, openmla::Plan* plan, int num_threads,
         std::optional<std::string> kernel) {
        Converter c;
        openmla::MqaLogitsArgs a;
        a.q = c.input(q, "q");
        a.k = c.input(k, "k");
        a.k_scale = c.input(k_scale, "k_scale");
        a.weights = c.input(weights, "weights");
        a.ks = c.input(ks, "ks");
        a.ke = c.input(ke, "ke");
        a.logits = c.output(logits, "logits");
        throw_if_error(plan_and_run(a, make_options(num_threads, kernel), plan,
                                    &openmla::mqa_logits, &openmla::plan_mqa_logits,
                                    &openmla::run_mqa_logits));
      },
      "q"_a, "k"_a, "k_scale"_a, "weights"_a, "ks"_a, "ke"_a, "logits"_a,
      "plan"_a.none() = nb::none(), "num_threads"_a = 0, "kernel"_a.none() = nb::none(),
      "openmla::mqa_logits: writes logits.");
  m.def(
      "paged_mqa_logits",
      [](nb::handle q, nb::handle kv_cache, openmla::IndexerKeyFormat format, nb::handle weights,
         nb::handle context_lens, nb::handle block_table, nb::handle logits, openmla::Plan* plan,
         int num_threads, std::optional<std::string> kernel) {
        Converter c;
        openmla::PagedMqaLogitsArgs a =
            paged_logits_args(c, q, kv_cache, format, weights, context_lens, block_table);
        a.logits = c.output(logits, "logits");
        throw_if_error(plan_and_run(a, make_options(num_threads, kernel), plan,
                                    &openmla::paged_mqa_logits, &openmla::plan_paged_mqa_logits,
                                    &openmla::run_paged_mqa_logits));
      },
      "q"_a, "kv_cache"_a, "format"_a, "weights"_a, "context_lens"_a, "block_table"_a, "logits"_a,
      "plan"_a.none() = nb::none(), "num_threads"_a = 0, "kernel"_a.none() = nb::none(),
      "openmla::paged_mqa_logits: writes logits.");
  m.def(
      "indexer_topk",
      [](nb::handle logits, nb::handle starts, nb::handle ends, nb::handle block_table,
         int64_t page_size, int64_t next_n, nb::handle indices, nb::handle topk_length,
         int num_threads, std::optional<std::string> kernel) {
        Converter c;
        openmla::IndexerTopkArgs a;
        a.logits = c.input(logits, "logits");
        a.starts = c.input(starts, "starts");
        a.ends = c.input(ends, "ends");
        a.block_table = c.input(block_table, "block_table");
        a.page_size = page_size;
        a.next_n = next_n;
        a.indices = c.output(indices, "indices");
        a.topk_length = c.output(topk_length, "topk_length");
        const openmla::Options options = make_options(num_threads, kernel);
        call_released([&] { return openmla::indexer_topk(a, options); });
      },
      "logits"_a, "starts"_a.none(), "ends"_a, "block_table"_a.none(), "page_size"_a, "next_n"_a,
      "indices"_a, "topk_length"_a.none(), "num_threads"_a = 0, "kernel"_a.none() = nb::none(),
      "openmla::indexer_topk: writes indices (and topk_length).");
  m.def(
      "paged_indexer_topk",
      [](nb::handle q, nb::handle kv_cache, openmla::IndexerKeyFormat format, nb::handle weights,
         nb::handle context_lens, nb::handle block_table, nb::handle out_block_table,
         int64_t out_page_size, nb::handle indices, nb::handle topk_length, openmla::Plan* plan,
         int num_threads, std::optional<std::string> kernel) {
        Converter c;
        openmla::PagedIndexerTopkArgs a;
        a.logits_args =
            paged_logits_args(c, q, kv_cache, format, weights, context_lens, block_table);
        a.out_block_table = c.input(out_block_table, "out_block_table");
        a.out_page_size = out_page_size;
        a.indices = c.output(indices, "indices");
        a.topk_length = c.output(topk_length, "topk_length");
        throw_if_error(plan_and_run(a, make_options(num_threads, kernel), plan,
                                    &openmla::paged_indexer_topk, &openmla::plan_paged_indexer_topk,
                                    &openmla::run_paged_indexer_topk));
      },
      "q"_a, "kv_cache"_a, "format"_a, "weights"_a, "context_lens"_a, "block_table"_a,
      "out_block_table"_a.none(), "out_page_size"_a, "indices"_a, "topk_length"_a.none(),
      "plan"_a.none() = nb::none(), "num_threads"_a = 0, "kernel"_a.none() = nb::none(),
      "openmla::paged_indexer_topk: writes indices (and topk_length).");
}

// ---- KV compressor (compressor.h)

static void bind_compressor(nb::module_& m) {
  m.def(
      "compressor_save_states",
      [](nb::handle kv, nb::handle score, nb::handle ape, nb::handle positions,
         nb::handle state_cache, nb::handle slot_mapping, int num_threads) {
        Converter c;
        openmla::CompressorSaveStatesArgs a;
        a.kv = c.input(kv, "kv");
        a.score = c.input(score, "score");
        a.ape = c.input(ape, "ape");
        a.positions = c.input(positions, "positions");
        a.state_cache = c.output(state_cache, "state_cache");
        a.slot_mapping = c.input(slot_mapping, "slot_mapping");
        Status status;
        {
          nb::gil_scoped_release release;
          status = openmla::compressor_save_states(a, make_options(num_threads, std::nullopt));
        }
        throw_if_error(status);
      },
      "kv"_a, "score"_a, "ape"_a, "positions"_a, "state_cache"_a, "slot_mapping"_a,
      "num_threads"_a = 0, "openmla::compressor_save_states: writes state_cache.");
  m.def(
      "compressor_store",
      [](nb::handle state_cache, nb::handle gather_slots, nb::handle positions,
         nb::handle kv_slot_mapping, nb::handle rms_norm_weight, float rms_norm_eps,
         nb::handle cos_sin_cache, nb::handle kv_cache, int64_t compress_ratio, bool hadamard,
         openmla::Plan* plan, int num_threads, std::optional<std::string> kernel) {
        Converter c;
        openmla::CompressorStoreArgs a;
        a.state_cache = c.input(state_cache, "state_cache");
        a.gather_slots = c.input(gather_slots, "gather_slots");
        a.positions = c.input(positions, "positions");
        a.kv_slot_mapping = c.input(kv_slot_mapping, "kv_slot_mapping");
        a.rms_norm_weight = c.input(rms_norm_weight, "rms_norm_weight");
        a.rms_norm_eps = rms_norm_eps;
        a.cos_sin_cache = c.input(cos_sin_cache, "cos_sin_cache");
        a.kv_cache = c.output(kv_cache, "kv_cache");
        a.compress_ratio = compress_ratio;
        a.hadamard = hadamard;
        throw_if_error(plan_and_run(a, make_options(num_threads, kernel), plan,
                                    &openmla::compressor_store, &openmla::plan_compressor_store,
                                    &openmla::run_compressor_store));
      },
      "state_cache"_a, "gather_slots"_a, "positions"_a, "kv_slot_mapping"_a, "rms_norm_weight"_a,
      "rms_norm_eps"_a, "cos_sin_cache"_a, "kv_cache"_a, "compress_ratio"_a, "hadamard"_a = true,
      "plan"_a.none() = nb::none(), "num_threads"_a = 0, "kernel"_a.none() = nb::none(),
      "openmla::compressor_store: writes the emitted entries into kv_cache.");
  m.def(
      "compressor_rope_table",
      [](double theta, double factor, int64_t original_seq_len, double beta_fast,
         double beta_slow, nb::handle cos_sin) {
        Converter c;
        const TensorView t = c.output(cos_sin, "cos_sin");
        Status status;
        {
          nb::gil_scoped_release release;
          status = openmla::compressor_rope_table(theta, factor, original_seq_len, beta_fast,
                                                  beta_slow, t);
        }
        throw_if_error(status);
      },
      "theta"_a, "factor"_a, "original_seq_len"_a, "beta_fast"_a, "beta_slow"_a, "cos_sin"_a);
}
