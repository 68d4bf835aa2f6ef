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
}
