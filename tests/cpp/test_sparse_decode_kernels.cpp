// Sparse-decode kernels vs the reference kernel: every registered sparse_decode kernel (skipped
// with the reason when the host / OPENMLA_MAX_ISA cap cannot run it) x a shape grid that covers
// each axis of the acceptance grid (V32 / MODEL1 / BF16 caches, page sizes, head counts, top-k,
// sinks with +-inf, NaN-poisoned unreferenced slots and page padding, extra cache, lengths incl.
// 0, all-invalid rows, out-of-range indices, non-contiguous tensors, seq_q 1 and 3, batch 0,
// top-k 0), compared with FlashMLA's comparator (spec §7.1/§7.2) on FlashMLA's input distribution
// (§7.3: q = randn clamped to [-1, 1], latents = randn/10 clamped, sm_scale = d_qk^-0.55). Plus
// determinism: bitwise identical output for 1/2/3 threads, and batch invariance (a request alone
// == the same request inside a batch).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "core/dtype.h"
#include "dispatch/registry.h"
#include "openmla/openmla.h"
#include "support/kernel_params.h"

namespace openmla {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

struct CaseSpec {
  const char* name;
  KvFormat format;
  int64_t head_dim;  // 576 or 512 (FP8 formats imply it)
  int64_t batch, seq_q, heads, topk, page, cache_tokens;
  bool lengths = false;
  int64_t extra_topk = 0, extra_page = 0, extra_tokens = 0;
  bool extra_lengths = false;
  int sink = 0;  // 0 none, 1 finite, 2 with +-inf entries
  bool noncontig = false;
  bool poison = true;
  bool invalid_rows = false;  // some rows all -1 and a zero length
  bool out_of_range = false;
  bool odd_scales = false;  // V32 only: non power-of-two fp32 scales
  // Off FlashMLA's distribution: latents randn clamped to [-4, 4] (not randn/10) and a 16x larger
  // softmax scale, so a few keys with large |V| carry most of each row's weight. Rounding P to
  // bf16 once before PV (FlashMLA's own numerics) misses the tolerance here.
  bool peaked = false;
  uint64_t seed = 1;
};

// Host buffer + view helpers. Non-contiguous views pad every dim by 1 and the last by 128 in
// the allocation (FlashMLA's non_contiguousify), keeping the last dim contiguous.
template <typename T>
struct HostTensor {
  std::vector<T> buf;
  TensorView view;
  std::vector<int64_t> shape, stride;
  HostTensor() = default;
  HostTensor(DType dtype, std::vector<int64_t> shp, bool noncontig) : shape(shp) {
    const size_t nd = shp.size();
    std::vector<int64_t> alloc(shp);
    if (noncontig) {
      for (size_t d = 0; d < nd; ++d) alloc[d] += (d + 1 == nd) ? 128 : 1;
    }
    stride.assign(nd, 1);
    for (int64_t d = static_cast<int64_t>(nd) - 2; d >= 0; --d)
      stride[d] = stride[d + 1] * alloc[d + 1];
    int64_t total = 1;
    for (auto a : alloc) total *= a;
    buf.assign(static_cast<size_t>(total), T{});
    view.data = buf.data();
    view.dtype = dtype;
    view.ndim = static_cast<int32_t>(nd);
    for (size_t d = 0; d < nd; ++d) {
      view.shape[d] = shp[d];
      view.stride[d] = stride[d];
    }
  }
  int64_t offset(std::initializer_list<int64_t> idx) const {
    int64_t o = 0, d = 0;
    for (auto i : idx) o += i * stride[d++];
    return o;
  }
  T& at(std::initializer_list<int64_t> idx) { return buf[offset(idx)]; }
};

struct Problem {
  SparseDecodeArgs args;
  HostTensor<uint16_t> q;
  std::vector<uint8_t> cache_bytes, extra_bytes;
  HostTensor<uint16_t> bf16_cache, bf16_extra;
  HostTensor<int32_t> indices, extra_indices;
  std::vector<int32_t> topk_length, extra_topk_length;
  std::vector<float> sink;
  HostTensor<uint16_t> out;
  HostTensor<float> lse;
};

uint16_t bf16_nan() { return 0x7FC0; }

// Builds one cache (FP8 via quantize_kv_cache, or bf16) with NaN in unreferenced slots.
void build_cache(const CaseSpec& c, int64_t page, int64_t tokens, const std::set<int64_t>& used,
                 std::mt19937_64& rng, std::vector<uint8_t>* bytes, HostTensor<uint16_t>* bf16,
                 TensorView* view) {
  const int64_t blocks = (tokens + page - 1) / page;
  const int64_t d = c.head_dim;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> latent(static_cast<size_t>(blocks * page * d));
  for (int64_t slot = 0; slot < blocks * page; ++slot) {
    const bool nan = c.poison && used.count(slot) == 0;
    for (int64_t i = 0; i < d; ++i)
      latent[slot * d + i] =
          nan        ? bf16_nan()
          : c.peaked ? float_to_bf16(std::fmin(4.0f, std::fmax(-4.0f, normal(rng))))
                     : float_to_bf16(std::fmin(1.0f, std::fmax(-1.0f, normal(rng) / 10)));
  }
  if (c.format == KvFormat::kBF16) {
    *bf16 = HostTensor<uint16_t>(DType::kBF16, {blocks, page, 1, d}, c.noncontig);
    for (int64_t slot = 0; slot < blocks * page; ++slot)
      for (int64_t i = 0; i < d; ++i)
        bf16->at({slot / page, slot % page, 0, i}) = latent[slot * d + i];
    *view = bf16->view;
    return;
  }
  int64_t bpt = 0, page_bytes = 0;
  ASSERT_TRUE(kv_bytes_per_token(c.format, d, &bpt).ok());
  ASSERT_TRUE(kv_page_bytes(c.format, page, d, 1, &page_bytes).ok());
  const int64_t stride0 = page_bytes + (c.format == KvFormat::kV32 ? bpt : 576);  // padding
  bytes->assign(static_cast<size_t>(blocks * stride0), 0);
  TensorView dst = make_strided_tensor(bytes->data(), DType::kU8, {blocks, page, 1, bpt},
                                       {stride0, bpt, bpt, 1});
  TensorView src = make_tensor(latent.data(), DType::kBF16, {blocks, page, 1, d});
  ASSERT_TRUE(quantize_kv_cache(src, c.format, dst).ok());
  if (c.odd_scales && c.format == KvFormat::kV32) {
    for (int64_t slot = 0; slot < blocks * page; ++slot) {
      uint8_t* rec = bytes->data() + (slot / page) * stride0 + (slot % page) * 656;
      for (int t = 0; t < 4; ++t) {
        float s = load_unaligned<float>(rec + 512 + 4 * t);
        s *= 1.3f + 0.1f * t;
        store_unaligned<float>(rec + 512 + 4 * t, s);
      }
    }
  }
  if (c.poison) {
    const int64_t used_bytes = c.format == KvFormat::kV32 ? 656 * page : 584 * page;
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* base = bytes->data() + b * stride0;
      std::memset(base + used_bytes, 0xFF, static_cast<size_t>(stride0 - used_bytes));
      if (c.format == KvFormat::kModel1)
        for (int64_t t = 0; t < page; ++t) base[576 * page + 8 * t + 7] = 0xFF;
    }
  }
  *view = dst;
}

// Fills indices [batch, seq_q, topk] and lengths; records referenced slots in `used`.
void build_indices(const CaseSpec& c, int64_t topk, int64_t num_slots, bool with_lengths,
                   std::mt19937_64& rng, HostTensor<int32_t>* idx, std::vector<int32_t>* lengths,
                   std::set<int64_t>* used) {
  *idx = HostTensor<int32_t>(DType::kI32, {c.batch, c.seq_q, topk}, c.noncontig);
  lengths->assign(static_cast<size_t>(c.batch), static_cast<int32_t>(topk));
  if (with_lengths) {
    for (int64_t b = 0; b < c.batch; ++b)
      (*lengths)[b] = static_cast<int32_t>(std::uniform_int_distribution<int64_t>(0, topk)(rng));
    if (c.batch > 1) (*lengths)[1] = 0;
    (*lengths)[0] = static_cast<int32_t>(std::max<int64_t>(1, topk - 3));
  }
  std::vector<int64_t> perm(static_cast<size_t>(num_slots));
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t s = 0; s < c.seq_q; ++s) {
      for (int64_t i = 0; i < num_slots; ++i) perm[i] = i;
      for (int64_t k = 0; k < topk; ++k) {
        int32_t v = -1;
        if (k < num_slots) {
          const int64_t j = std::uniform_int_distribution<int64_t>(k, num_slots - 1)(rng);
          std::swap(perm[k], perm[j]);
          v = static_cast<int32_t>(perm[k]);
        }
        const uint64_t r = rng() % 100;
        if (r < 8)
          v = -1;
        else if (c.out_of_range && r < 16)
          v = (r & 1) ? static_cast<int32_t>(num_slots + r) : -7;
        if (c.invalid_rows && b == 0 && s == c.seq_q - 1) v = -1;
        idx->at({b, s, k}) = v;
        if (k < (*lengths)[b] && v >= 0 && v < num_slots) used->insert(v);
      }
    }
  }
}

std::unique_ptr<Problem> make_problem(const CaseSpec& c, int64_t batch_override = -1) {
  auto pr = std::make_unique<Problem>();
  std::mt19937_64 rng(c.seed * 7919 + 17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t d = c.head_dim;
  pr->q = HostTensor<uint16_t>(DType::kBF16, {c.batch, c.seq_q, c.heads, d}, c.noncontig);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t s = 0; s < c.seq_q; ++s)
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t i = 0; i < d; ++i)
          pr->q.at({b, s, h, i}) = float_to_bf16(std::fmin(1.0f, std::fmax(-1.0f, normal(rng))));
  const int64_t slots = (c.cache_tokens + c.page - 1) / c.page * c.page;
  std::set<int64_t> used, used_extra;
  build_indices(c, c.topk, slots, c.lengths, rng, &pr->indices, &pr->topk_length, &used);
  SparseDecodeArgs& a = pr->args;
  a.q = pr->q.view;
  a.indices = pr->indices.view;
  a.softmax_scale = static_cast<float>(std::pow(static_cast<double>(d), -0.55));  // FlashMLA tests
  if (c.peaked) a.softmax_scale *= 16.0f;
  if (c.lengths) a.topk_length = make_tensor(pr->topk_length.data(), DType::kI32, {c.batch});
  if (c.extra_topk > 0) {
    const int64_t eslots = (c.extra_tokens + c.extra_page - 1) / c.extra_page * c.extra_page;
    build_indices(c, c.extra_topk, eslots, c.extra_lengths, rng, &pr->extra_indices,
                  &pr->extra_topk_length, &used_extra);
    a.extra_indices = pr->extra_indices.view;
    if (c.extra_lengths)
      a.extra_topk_length = make_tensor(pr->extra_topk_length.data(), DType::kI32, {c.batch});
    build_cache(c, c.extra_page, c.extra_tokens, used_extra, rng, &pr->extra_bytes, &pr->bf16_extra,
                &a.extra_kv_cache);
  }
  build_cache(c, c.page, c.cache_tokens, used, rng, &pr->cache_bytes, &pr->bf16_cache, &a.kv_cache);
  if (c.sink > 0) {
    pr->sink.resize(static_cast<size_t>(c.heads));
    for (auto& v : pr->sink) v = normal(rng) * 2.0f;
    if (c.sink == 2) {
      pr->sink[0] = (c.seed & 1) ? kInf : -kInf;
      if (c.heads > 1) pr->sink[1] = (c.seed & 1) ? -kInf : kInf;
    }
    a.attn_sink = make_tensor(pr->sink.data(), DType::kF32, {c.heads});
  }
  pr->out = HostTensor<uint16_t>(DType::kBF16, {c.batch, c.seq_q, c.heads, 512}, c.noncontig);
  pr->lse = HostTensor<float>(DType::kF32, {c.batch, c.heads, c.seq_q}, c.noncontig);
  for (auto& v : pr->out.buf) v = 0x7FC1;  // garbage that must be overwritten
  for (auto& v : pr->lse.buf) v = -12345.0f;
  a.out = pr->out.view;
  a.lse = pr->lse.view;
  return pr;
}

// Dense copies of the logical out / lse.
struct Result {
  std::vector<float> out, lse;
  std::vector<uint16_t> out_bits;
  std::vector<uint32_t> lse_bits;
};

Result collect(Problem& pr, const CaseSpec& c) {
  Result r;
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t s = 0; s < c.seq_q; ++s)
      for (int64_t h = 0; h < c.heads; ++h) {
        for (int64_t i = 0; i < 512; ++i) {
          const uint16_t v = pr.out.at({b, s, h, i});
          r.out_bits.push_back(v);
          r.out.push_back(bf16_to_float(v));
        }
        const float l = pr.lse.at({b, h, s});
        r.lse.push_back(l);
        r.lse_bits.push_back(float_bits(l));
      }
  return r;
}

Status run_kernel(Problem& pr, const char* kernel, int threads) {
  Options o;
  o.kernel = kernel;
  o.num_threads = threads;
  return sparse_decode(pr.args, o);
}

// FlashMLA check_is_allclose.
::testing::AssertionResult allclose(const std::vector<float>& a, const std::vector<float>& r,
                                    double abs_tol, double rel_tol, double cos_tol,
                                    const char* what) {
  if (a.size() != r.size()) return ::testing::AssertionFailure() << what << ": size mismatch";
  std::vector<double> x(a.size()), y(r.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const float u = a[i], v = r[i];
    const bool un = std::isnan(u), vn = std::isnan(v);
    const bool up = std::isinf(u) && u > 0, vp = std::isinf(v) && v > 0;
    const bool um = std::isinf(u) && u < 0, vm = std::isinf(v) && v < 0;
    if (un != vn || up != vp || um != vm)
      return ::testing::AssertionFailure()
             << what << ": anomaly mismatch at " << i << ": " << u << " vs ref " << v;
    x[i] = (un || up || um) ? 0.0 : u;
    y[i] = (vn || vp || vm) ? 0.0 : v;
  }
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double ad = std::fabs(x[i] - y[i]);
    const double rel = ad / (std::fabs(y[i]) + 1e-6);
    if (!(ad < abs_tol || rel < rel_tol))
      return ::testing::AssertionFailure() << what << ": element " << i << " = " << x[i]
                                           << " vs ref " << y[i] << " (abs " << ad << ")";
    sxy += x[i] * y[i];
    sxx += x[i] * x[i];
    syy += y[i] * y[i];
  }
  const double cos_diff = syy < 1e-12 ? 0.0 : 1.0 - 2.0 * sxy / (sxx + syy);
  if (cos_diff > cos_tol)
    return ::testing::AssertionFailure() << what << ": cos_diff " << cos_diff << " > " << cos_tol;
  return ::testing::AssertionSuccess();
}

const std::vector<CaseSpec>& cases() {
  using F = KvFormat;
  static const std::vector<CaseSpec> list = [] {
    std::vector<CaseSpec> v;
    auto add = [&](CaseSpec c) {
      v.push_back(c);
      return &v.back();
    };
    // name, format, d, batch, seq_q, heads, topk, page, cache_tokens
    add({"v32_basic", F::kV32, 576, 2, 1, 16, 64, 64, 300});
    {
      auto* c = add({"v32_h128_k2048", F::kV32, 576, 1, 1, 128, 2048, 64, 4096});
      c->sink = 1;
    }
    {
      auto* c = add({"v32_s3_p53_len", F::kV32, 576, 2, 3, 8, 100, 53, 400});
      c->lengths = true;
      c->noncontig = true;
    }
    {
      auto* c = add({"v32_k1_p2_h1", F::kV32, 576, 3, 1, 1, 1, 2, 20});
      c->sink = 2;
    }
    {
      auto* c = add({"v32_extra_p61_p69", F::kV32, 576, 2, 2, 64, 100, 61, 500});
      c->extra_topk = 64;
      c->extra_page = 69;
      c->extra_tokens = 300;
      c->extra_lengths = true;
      c->sink = 2;
      c->seed = 3;
    }
    {
      auto* c = add({"v32_p576_oob", F::kV32, 576, 2, 1, 16, 100, 576, 1200});
      c->out_of_range = true;
      c->lengths = true;
    }
    {
      auto* c = add({"v32_p256_invalid_rows", F::kV32, 576, 2, 3, 16, 64, 256, 600});
      c->invalid_rows = true;
      c->lengths = true;
      c->sink = 2;
      c->seed = 4;
    }
    {
      auto* c = add({"v32_odd_scales", F::kV32, 576, 1, 1, 16, 64, 64, 200});
      c->odd_scales = true;
      c->poison = false;
    }
    {
      auto* c = add({"v32_topk_gt_slots", F::kV32, 576, 2, 1, 8, 100, 2, 40});
      c->sink = 1;
    }
    {
      auto* c = add({"model1_bench_like", F::kModel1, 512, 2, 1, 64, 128, 256, 600});
      c->extra_topk = 512;
      c->extra_page = 64;
      c->extra_tokens = 1500;
      c->lengths = true;
      c->extra_lengths = true;
      c->sink = 1;
    }
    {
      auto* c = add({"model1_p576_nc", F::kModel1, 512, 2, 1, 16, 64, 576, 1300});
      c->noncontig = true;
      c->sink = 2;
      c->seed = 5;
    }
    {
      auto* c = add({"model1_s3_h128_p69", F::kModel1, 512, 1, 3, 128, 100, 69, 500});
      c->sink = 2;
      c->seed = 6;
    }
    {
      auto* c = add({"model1_k2048_h8", F::kModel1, 512, 2, 1, 8, 2048, 64, 3000});
      c->lengths = true;
    }
    {
      auto* c = add({"model1_h1_k2048", F::kModel1, 512, 1, 1, 1, 2048, 61, 2500});
      c->extra_topk = 64;
      c->extra_page = 2;
      c->extra_tokens = 100;
      c->sink = 1;
    }
    {
      auto* c = add({"model1_oob_invalid", F::kModel1, 512, 2, 3, 16, 100, 53, 400});
      c->out_of_range = true;
      c->invalid_rows = true;
      c->extra_topk = 100;
      c->extra_page = 256;
      c->extra_tokens = 600;
    }
    {
      auto* c = add({"model1_extra_len0", F::kModel1, 512, 3, 1, 16, 64, 64, 300});
      c->extra_topk = 64;
      c->extra_page = 64;
      c->extra_tokens = 200;
      c->extra_lengths = true;
      c->lengths = true;
    }
    {
      auto* c = add({"bf16_576_basic", F::kBF16, 576, 2, 1, 16, 64, 64, 300});
      c->sink = 2;
      c->seed = 7;
    }
    {
      auto* c = add({"bf16_512_extra_nc", F::kBF16, 512, 2, 3, 8, 100, 53, 400});
      c->noncontig = true;
      c->extra_topk = 64;
      c->extra_page = 61;
      c->extra_tokens = 200;
      c->lengths = true;
    }
    {
      auto* c = add({"bf16_576_h64_k2048", F::kBF16, 576, 1, 1, 64, 2048, 256, 3000});
      c->out_of_range = true;
    }
    // Peaked rows with large |V| (see CaseSpec::peaked), one per format.
    for (auto [name, format, dim] :
         {std::tuple{"v32_peaked", F::kV32, 576}, std::tuple{"model1_peaked", F::kModel1, 512},
          std::tuple{"bf16_peaked", F::kBF16, 576}}) {
      auto* c = add({name, format, static_cast<int64_t>(dim), 2, 1, 64, 256, 64, 1000});
      c->peaked = true;
      c->seed = 11;
    }
    // Zero-size problems: no request, and rows with no slot at all (out 0, lse +inf; sinks
    // included).
    add({"v32_batch0", F::kV32, 576, 0, 1, 16, 64, 64, 300});
    {
      auto* c = add({"model1_topk0_extra", F::kModel1, 512, 2, 2, 64, 0, 64, 300});
      c->extra_topk = 16;
      c->extra_page = 53;
      c->extra_tokens = 100;
      c->sink = 2;
    }
    {
      auto* c = add({"bf16_576_topk0_h128", F::kBF16, 576, 2, 1, 128, 0, 64, 100});
      c->sink = 1;
    }
    {
      auto* c = add({"bf16_512_h128_p2", F::kBF16, 512, 1, 1, 128, 64, 2, 200});
      c->invalid_rows = true;
      c->sink = 1;
    }
    return v;
  }();
  return list;
}

// The reference result of each case is computed once.
const Result& reference(size_t case_index) {
  static std::map<size_t, Result> cache;
  auto it = cache.find(case_index);
  if (it != cache.end()) return it->second;
  auto pr = make_problem(cases()[case_index]);
  const Status st = run_kernel(*pr, "sparse_decode.ref", 2);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return cache[case_index] = collect(*pr, cases()[case_index]);
}

std::vector<std::string> fast_kernel_names() {
  return openmla_test::kernel_names(Op::kSparseDecode, true);
}

const KernelEntry* find_kernel(const std::string& name) {
  return openmla_test::find_kernel(Op::kSparseDecode, name);
}

class SparseDecodeKernelTest : public ::testing::TestWithParam<std::tuple<std::string, size_t>> {};

TEST_P(SparseDecodeKernelTest, MatchesReference) {
  const std::string& kname = std::get<0>(GetParam());
  const size_t ci = std::get<1>(GetParam());
  const KernelEntry* k = find_kernel(kname);
  ASSERT_NE(k, nullptr);
  if (!kernel_runnable(*k))
    GTEST_SKIP() << kname << " not runnable here (needs " << isa_name(k->isa) << ", effective "
                 << isa_name(effective_isa()) << ")";
  const CaseSpec& c = cases()[ci];
  const Result& ref = reference(ci);
  auto pr = make_problem(c);
  const Status st = run_kernel(*pr, kname.c_str(), 2);
  ASSERT_TRUE(st.ok()) << st.to_string();
  const Result got = collect(*pr, c);
  EXPECT_TRUE(allclose(got.out, ref.out, 1e-3, 2.01 / 128, 5e-6, "out"));
  EXPECT_TRUE(allclose(got.lse, ref.lse, 1e-6, 8.01 / 65536, 1e-7, "lse"));
  EXPECT_EQ(got.lse.size(), static_cast<size_t>(c.batch * c.seq_q * c.heads));
  if (c.topk == 0 && c.extra_topk == 0) {  // every row lonely, whatever the sink: out 0, lse +inf
    for (float v : got.out) ASSERT_EQ(v, 0.0f);
    for (float v : got.lse) ASSERT_EQ(v, kInf);
  }
  // Padding of the non-contiguous outputs must be untouched.
  if (c.noncontig) {
    size_t touched = 0;
    for (auto v : pr->lse.buf) touched += v != -12345.0f;
    EXPECT_EQ(touched, static_cast<size_t>(c.batch * c.heads * c.seq_q));
  }
}

std::vector<std::tuple<std::string, size_t>> all_params() {
  std::vector<std::tuple<std::string, size_t>> v;
  for (const auto& n : fast_kernel_names())
    for (size_t i = 0; i < cases().size(); ++i) v.emplace_back(n, i);
  return v;
}

INSTANTIATE_TEST_SUITE_P(Grid, SparseDecodeKernelTest, ::testing::ValuesIn(all_params()),
                         [](const ::testing::TestParamInfo<std::tuple<std::string, size_t>>& info) {
                           return openmla_test::test_name(std::get<0>(info.param) + "_" +
                                                          cases()[std::get<1>(info.param)].name);
                         });

class SparseDecodeKernelDeterminism : public ::testing::TestWithParam<std::string> {};

TEST_P(SparseDecodeKernelDeterminism, ThreadCountInvariant) {
  const KernelEntry* k = find_kernel(GetParam());
  ASSERT_NE(k, nullptr);
  if (!kernel_runnable(*k)) GTEST_SKIP() << GetParam() << " not runnable here";
  for (size_t ci : {size_t{1}, size_t{4}, size_t{9}}) {
    const CaseSpec& c = cases()[ci];
    std::vector<Result> results;
    for (int threads : {1, 2, 3}) {
      auto pr = make_problem(c);
      const Status st = run_kernel(*pr, GetParam().c_str(), threads);
      ASSERT_TRUE(st.ok()) << st.to_string();
      results.push_back(collect(*pr, c));
    }
    for (int t = 1; t < 3; ++t) {
      EXPECT_EQ(results[t].out_bits, results[0].out_bits) << c.name << " threads " << t + 1;
      EXPECT_EQ(results[t].lse_bits, results[0].lse_bits) << c.name << " threads " << t + 1;
    }
  }
}

// Slices request b out of a batched problem (views into the same buffers).
SparseDecodeArgs slice_request(const Problem& pr, int64_t b) {
  SparseDecodeArgs a = pr.args;
  auto slice = [b](TensorView t, int64_t elem) {
    if (!t.present()) return t;
    t.data = static_cast<char*>(t.data) + b * t.stride[0] * elem;
    t.shape[0] = 1;
    return t;
  };
  a.q = slice(a.q, 2);
  a.indices = slice(a.indices, 4);
  a.topk_length = slice(a.topk_length, 4);
  a.extra_indices = slice(a.extra_indices, 4);
  a.extra_topk_length = slice(a.extra_topk_length, 4);
  a.out = slice(a.out, 2);
  a.lse = slice(a.lse, 4);
  return a;
}

TEST_P(SparseDecodeKernelDeterminism, BatchInvariant) {
  const KernelEntry* k = find_kernel(GetParam());
  ASSERT_NE(k, nullptr);
  if (!kernel_runnable(*k)) GTEST_SKIP() << GetParam() << " not runnable here";
  for (size_t ci : {size_t{4}, size_t{9}, size_t{12}}) {
    const CaseSpec& c = cases()[ci];
    auto batched = make_problem(c);
    ASSERT_TRUE(run_kernel(*batched, GetParam().c_str(), 2).ok());
    const Result all = collect(*batched, c);
    auto alone = make_problem(c);
    for (int64_t b = 0; b < c.batch; ++b) {
      Options o;
      o.kernel = GetParam().c_str();
      o.num_threads = 2;
      const Status st = sparse_decode(slice_request(*alone, b), o);
      ASSERT_TRUE(st.ok()) << st.to_string();
    }
    const Result one = collect(*alone, c);
    EXPECT_EQ(one.out_bits, all.out_bits) << c.name;
    EXPECT_EQ(one.lse_bits, all.lse_bits) << c.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, SparseDecodeKernelDeterminism,
                         ::testing::ValuesIn(fast_kernel_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return openmla_test::test_name(info.param);
                         });

}  // namespace
}  // namespace openmla
