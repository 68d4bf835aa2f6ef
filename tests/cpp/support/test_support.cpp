#include "support/test_support.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace openmla_test {

uint16_t bf16_exact(float f) {
  const uint16_t h = openmla::float_to_bf16(f);
  if (!(std::isnan(f) || openmla::bf16_to_float(h) == f)) {
    ADD_FAILURE() << "test value " << f << " is not exactly representable in bf16";
  }
  return h;
}

std::vector<uint16_t> Rng::bf16_normal(int64_t n, double sd, double clamp) {
  std::vector<uint16_t> v(static_cast<size_t>(n));
  for (auto& x : v) {
    const double d = std::max(-clamp, std::min(clamp, normal() * sd));
    x = openmla::float_to_bf16(static_cast<float>(d));
  }
  return v;
}

std::vector<int64_t> Rng::permutation(int64_t n) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  std::shuffle(p.begin(), p.end(), gen_);
  return p;
}

double model_e4m3_value(uint8_t code) {
  const bool negative = code & 0x80;
  const int e = (code >> 3) & 0xF;
  const int m = code & 0x7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  double magnitude;
  if (e == 0) {
    magnitude = (m / 8.0) * std::pow(2.0, -6);  // subnormal
  } else {
    magnitude = (1.0 + m / 8.0) * std::pow(2.0, e - 7);
  }
  return negative ? -magnitude : magnitude;
}

uint8_t model_e4m3_encode(double x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  if (std::isnan(x)) return sign | 0x7F;
  const double a = std::fabs(x);
  // Candidates: the finite magnitudes 0x00..0x7E plus the first value past 448 (480, the value code
  // 0x7F would have with one more mantissa step) standing for "overflow -> NaN".
  static const std::vector<double> magnitudes = [] {
    std::vector<double> m(128);
    for (int c = 0; c < 0x7F; ++c) m[c] = model_e4m3_value(static_cast<uint8_t>(c));
    m[0x7F] = 480.0;
    return m;
  }();
  int best = 0;
  double best_err = std::numeric_limits<double>::infinity();
  for (int c = 0; c <= 0x7F; ++c) {
    const double err = std::fabs(a - magnitudes[c]);
    if (err < best_err || (err == best_err && (c & 1) == 0)) {
      best = c;
      best_err = err;
    }
  }
  if (a > 480.0) best = 0x7F;
  return static_cast<uint8_t>(sign | best);
}

namespace {

struct Geom {
  int64_t nope, tile, tiles, record;
};
Geom geom(KvFormat f) {
  return f == KvFormat::kV32 ? Geom{512, 128, 4, 656} : Geom{448, 64, 7, 576};
}

/// Smallest power of two >= max(amax / 448, 1e-4) as log2 (FlashMLA's ue8m0 scale).
int scale_log2(double amax) {
  const double s = std::max(amax / 448.0, 1e-4);
  int k = -20;
  while (std::ldexp(1.0, k) < s) ++k;
  return k;
}

}  // namespace

void model_quantize_token(KvFormat format, const uint16_t* latent, uint8_t* record,
                          uint8_t* scales7) {
  const Geom g = geom(format);
  for (int64_t t = 0; t < g.tiles; ++t) {
    double amax = 0.0;
    bool nan = false;
    for (int64_t i = t * g.tile; i < (t + 1) * g.tile; ++i) {
      const double x = bf(latent[i]);
      if (std::isnan(x)) nan = true;
      amax = std::max(amax, std::fabs(x));
    }
    const int k = nan ? 0 : scale_log2(amax);
    for (int64_t i = t * g.tile; i < (t + 1) * g.tile; ++i) {
      record[i] =
          nan ? 0x7F : model_e4m3_encode(std::ldexp(static_cast<double>(bf(latent[i])), -k));
    }
    if (format == KvFormat::kV32) {
      const float scale = nan ? std::numeric_limits<float>::quiet_NaN() : std::ldexp(1.0f, k);
      std::memcpy(record + 512 + 4 * t, &scale, 4);
    } else {
      scales7[t] = nan ? 0xFF : static_cast<uint8_t>(k + 127);
    }
  }
  const int64_t rope_at = format == KvFormat::kV32 ? 528 : 448;
  for (int64_t i = 0; i < 64; ++i) {
    const uint16_t v = latent[g.nope + i];
    record[rope_at + 2 * i] = static_cast<uint8_t>(v & 0xFF);
    record[rope_at + 2 * i + 1] = static_cast<uint8_t>(v >> 8);
  }
}

void model_dequantize_token(KvFormat format, const uint8_t* record, const uint8_t* scales7,
                            uint16_t* out) {
  const Geom g = geom(format);
  for (int64_t t = 0; t < g.tiles; ++t) {
    for (int64_t i = t * g.tile; i < (t + 1) * g.tile; ++i) {
      const float e = static_cast<float>(model_e4m3_value(record[i]));
      float product;
      if (format == KvFormat::kV32) {
        float scale;
        std::memcpy(&scale, record + 512 + 4 * t, 4);
        product = e * scale;  // fp32 product, then one rounding to bf16
      } else {
        const uint8_t c = scales7[t];
        const float scale = c == 0xFF ? std::numeric_limits<float>::quiet_NaN()
                                      : std::ldexp(1.0f, static_cast<int>(c) - 127);
        product = e * scale;  // bf16 x bf16 is exact in fp32, rounded once to bf16
      }
      out[i] = openmla::float_to_bf16(product);
    }
  }
  const int64_t rope_at = format == KvFormat::kV32 ? 528 : 448;
  for (int64_t i = 0; i < 64; ++i)
    out[g.nope + i] =
        static_cast<uint16_t>(record[rope_at + 2 * i] | (record[rope_at + 2 * i + 1] << 8));
}

TensorView contiguous_view(void* data, DType dtype, const std::vector<int64_t>& shape) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.ndim = static_cast<int32_t>(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    t.shape[i] = shape[i];
    t.stride[i] = s;
    s *= shape[i];
  }
  return t;
}

namespace {
int64_t view_bytes_per_token(KvFormat f, int64_t head_dim, int64_t heads_kv) {
  if (f == KvFormat::kV32) return 656;
  if (f == KvFormat::kModel1) return 584;
  return 2 * head_dim * heads_kv;
}
}  // namespace

TensorView PagedKv::view() {
  TensorView t;
  t.data = bytes();
  t.ndim = 4;
  t.shape[0] = num_blocks;
  t.shape[1] = page_size;
  t.shape[2] = heads_kv;
  if (format == KvFormat::kBF16) {
    t.dtype = DType::kBF16;
    t.shape[3] = head_dim;
    t.stride[3] = 1;
    t.stride[2] = head_dim;
    t.stride[1] = head_dim * heads_kv;
    t.stride[0] = page_stride_bytes / 2;
  } else {
    t.dtype = DType::kU8;
    const int64_t bpt = view_bytes_per_token(format, head_dim, 1);
    t.shape[3] = bpt;
    t.stride[3] = 1;
    t.stride[2] = bpt;
    t.stride[1] = bpt;
    t.stride[0] = page_stride_bytes;
  }
  return t;
}

void PagedKv::poison_padding() {
  uint8_t* base = bytes();
  for (int64_t b = 0; b < num_blocks; ++b) {
    uint8_t* page = base + b * page_stride_bytes;
    const int64_t used = format == KvFormat::kModel1 ? 584 * page_size
                         : format == KvFormat::kV32  ? 656 * page_size
                                                     : 2 * head_dim * heads_kv * page_size;
    std::fill(page + used, page + page_stride_bytes, 0xFF);
    if (format == KvFormat::kModel1)
      for (int64_t t = 0; t < page_size; ++t) page[576 * page_size + 8 * t + 7] = 0xFF;
  }
}

PagedKv build_paged_kv(KvFormat format, int64_t head_dim, int64_t heads_kv, int64_t page_size,
                       const std::vector<std::vector<uint16_t>>& requests, uint32_t seed,
                       int64_t pad_tokens) {
  PagedKv kv;
  kv.format = format;
  kv.head_dim = head_dim;
  kv.heads_kv = heads_kv;
  kv.page_size = page_size;
  const int64_t token_elems = heads_kv * head_dim;
  int64_t used_blocks = 0;
  for (const auto& r : requests) {
    const int64_t len = static_cast<int64_t>(r.size()) / token_elems;
    used_blocks += (len + page_size - 1) / page_size;
  }
  kv.num_blocks = used_blocks + 1;
  Rng rng(seed);
  const std::vector<int64_t> perm = rng.permutation(kv.num_blocks);
  std::vector<uint16_t> latents(static_cast<size_t>(kv.num_blocks * page_size * token_elems),
                                kBf16NaN);
  int64_t next = 0;
  for (const auto& r : requests) {
    const int64_t len = static_cast<int64_t>(r.size()) / token_elems;
    std::vector<int32_t> blocks;
    for (int64_t i = 0; i < (len + page_size - 1) / page_size; ++i)
      blocks.push_back(static_cast<int32_t>(perm[next++]));
    for (int64_t t = 0; t < len; ++t) {
      const int64_t slot = blocks[t / page_size] * page_size + t % page_size;
      std::copy(r.begin() + t * token_elems, r.begin() + (t + 1) * token_elems,
                latents.begin() + slot * token_elems);
    }
    kv.blocks.push_back(blocks);
  }
  Status st = openmla::kv_page_bytes(format, page_size, head_dim, heads_kv, &kv.page_bytes);
  EXPECT_TRUE(st.ok()) << st.to_string();
  const int64_t pad_unit =
      format == KvFormat::kModel1 ? 576 : view_bytes_per_token(format, head_dim, heads_kv);
  kv.page_stride_bytes = kv.page_bytes + pad_tokens * pad_unit;
  kv.storage.assign(static_cast<size_t>((kv.num_blocks * kv.page_stride_bytes + 7) / 8 + 1), 0);
  if (format == KvFormat::kBF16) {
    std::fill(kv.bytes(), kv.bytes() + kv.storage.size() * 8, 0xFF);
    for (int64_t b = 0; b < kv.num_blocks; ++b)
      std::memcpy(kv.bytes() + b * kv.page_stride_bytes,
                  latents.data() + b * page_size * token_elems,
                  static_cast<size_t>(page_size * token_elems * 2));
  } else {
    EXPECT_EQ(heads_kv, 1);
    TensorView src =
        contiguous_view(latents.data(), DType::kBF16, {kv.num_blocks, page_size, 1, head_dim});
    st = openmla::quantize_kv_cache(src, format, kv.view());
    EXPECT_TRUE(st.ok()) << st.to_string();
  }
  return kv;
}

PagedKv dequantized_copy(PagedKv& fp8) {
  PagedKv kv;
  kv.format = KvFormat::kBF16;
  kv.head_dim = fp8.head_dim;
  kv.heads_kv = 1;
  kv.page_size = fp8.page_size;
  kv.num_blocks = fp8.num_blocks;
  kv.blocks = fp8.blocks;
  kv.page_bytes = 2 * kv.head_dim * kv.page_size;
  kv.page_stride_bytes = kv.page_bytes + 2 * kv.head_dim;
  kv.storage.assign(static_cast<size_t>((kv.num_blocks * kv.page_stride_bytes + 7) / 8 + 1),
                    ~uint64_t{0});
  const Status st = openmla::dequantize_kv_cache(fp8.view(), fp8.format, kv.view());
  EXPECT_TRUE(st.ok()) << st.to_string();
  return kv;
}

namespace {

constexpr uint16_t kOutGarbage = 0xFFFF;  // NaN: anything the op fails to write shows up
const float kF32Garbage = std::numeric_limits<float>::quiet_NaN();

/// Holds either a contiguous or a padded copy of an input and its view.
template <typename T>
struct Input {
  std::vector<T> contiguous;
  Padded<T> padded;
  bool use_padded;
  Input(const std::vector<T>& data, std::vector<int64_t> shape, bool nc, T fill)
      : contiguous(data), padded(shape, fill), use_padded(nc) {
    if (nc) padded.load(data);
  }
  TensorView view(DType dtype) {
    if (use_padded) return padded.view(dtype);
    return contiguous_view(contiguous.data(), dtype, padded.shape);
  }
};

}  // namespace

OpResult run_sparse_decode(const SparseDecodeCase& c, bool nc, const openmla::Options& options) {
  OpResult r;
  openmla::SparseDecodeArgs a;
  Input<uint16_t> q(c.q, {c.batch, c.seq_q, c.heads_q, c.head_dim}, nc, kBf16NaN);
  Input<int32_t> idx(c.indices, {c.batch, c.seq_q, c.topk}, nc, 0);
  Input<int32_t> len(c.topk_length, {c.batch}, nc, 0);
  Input<float> sink(c.sink, {c.heads_q}, false, 0.0f);
  Input<int32_t> eidx(c.extra_indices, {c.batch, c.seq_q, c.extra_topk}, nc && c.extra, 0);
  Input<int32_t> elen(c.extra_topk_length, {c.batch}, nc, 0);
  a.q = q.view(DType::kBF16);
  a.kv_cache = c.kv->view();
  a.indices = idx.view(DType::kI32);
  if (!c.topk_length.empty()) a.topk_length = len.view(DType::kI32);
  if (!c.sink.empty()) a.attn_sink = sink.view(DType::kF32);
  if (c.extra) {
    a.extra_kv_cache = c.extra->view();
    a.extra_indices = eidx.view(DType::kI32);
    if (!c.extra_topk_length.empty()) a.extra_topk_length = elen.view(DType::kI32);
  }
  a.softmax_scale = c.scale;
  Padded<uint16_t> out({c.batch, c.seq_q, c.heads_q, 512}, kOutGarbage);
  std::vector<uint16_t> out_c(static_cast<size_t>(c.batch * c.seq_q * c.heads_q * 512),
                              kOutGarbage);
  std::vector<float> lse_buf(static_cast<size_t>(c.batch * c.seq_q * c.heads_q + 16), kF32Garbage);
  a.out = nc ? out.view(DType::kBF16)
             : contiguous_view(out_c.data(), DType::kBF16, {c.batch, c.seq_q, c.heads_q, 512});
  if (nc) {  // upstream's lse: a [b, h, s] view of a contiguous [b, s, h] buffer
    a.lse = openmla::make_strided_tensor(lse_buf.data(), DType::kF32, {c.batch, c.heads_q, c.seq_q},
                                         {c.seq_q * c.heads_q, 1, c.heads_q});
  } else {
    a.lse = contiguous_view(lse_buf.data(), DType::kF32, {c.batch, c.heads_q, c.seq_q});
  }
  r.status = openmla::sparse_decode(a, options);
  r.out = nc ? out.extract() : out_c;
  r.lse.resize(static_cast<size_t>(c.batch * c.heads_q * c.seq_q));
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.heads_q; ++h)
      for (int64_t s = 0; s < c.seq_q; ++s)
        r.lse[(b * c.heads_q + h) * c.seq_q + s] =
            lse_buf[b * a.lse.stride[0] + h * a.lse.stride[1] + s * a.lse.stride[2]];
  return r;
}

OpResult run_dense_decode(const DenseDecodeCase& c, bool nc, const openmla::Options& options) {
  OpResult r;
  openmla::DenseDecodeArgs a;
  std::vector<int32_t> table(static_cast<size_t>(c.batch * c.max_blocks), kGarbageBlock);
  for (int64_t b = 0; b < c.batch; ++b)
    for (size_t i = 0; i < c.kv->blocks[b].size(); ++i)
      table[b * c.max_blocks + i] = c.kv->blocks[b][i];
  Input<uint16_t> q(c.q, {c.batch, c.seq_q, c.heads_q, c.head_dim}, nc, kBf16NaN);
  Input<int32_t> bt(table, {c.batch, c.max_blocks}, nc, kGarbageBlock);
  Input<int32_t> lens(c.seqlens, {c.batch}, nc, 0);
  a.q = q.view(DType::kBF16);
  a.kv_cache = c.kv->view();
  a.block_table = bt.view(DType::kI32);
  a.cache_seqlens = lens.view(DType::kI32);
  a.causal = c.causal;
  a.softmax_scale = c.scale;
  Input<uint16_t> out(
      std::vector<uint16_t>(static_cast<size_t>(c.batch * c.seq_q * c.heads_q * 512), kOutGarbage),
      {c.batch, c.seq_q, c.heads_q, 512}, nc, kOutGarbage);
  Input<float> lse(
      std::vector<float>(static_cast<size_t>(c.batch * c.heads_q * c.seq_q), kF32Garbage),
      {c.batch, c.heads_q, c.seq_q}, nc, kF32Garbage);
  a.out = out.view(DType::kBF16);
  a.lse = lse.view(DType::kF32);
  r.status = openmla::dense_decode(a, options);
  r.out = nc ? out.padded.extract() : out.contiguous;
  r.lse = nc ? lse.padded.extract() : lse.contiguous;
  return r;
}

OpResult run_sparse_prefill(const SparsePrefillCase& c, bool nc, const openmla::Options& options) {
  OpResult r;
  openmla::SparsePrefillArgs a;
  Input<uint16_t> q(c.q, {c.seq_q, c.heads_q, c.head_dim}, nc, kBf16NaN);
  Input<uint16_t> kv(c.kv, {c.seq_kv, c.heads_kv, c.head_dim}, nc, kBf16NaN);
  Input<int32_t> idx(c.indices, {c.seq_q, c.heads_kv, c.topk}, nc, 0);
  Input<int32_t> len(c.topk_length, {c.seq_q}, nc, 0);
  Input<float> sink(c.sink, {c.heads_q}, false, 0.0f);
  a.q = q.view(DType::kBF16);
  a.kv = kv.view(DType::kBF16);
  a.indices = idx.view(DType::kI32);
  if (!c.topk_length.empty()) a.topk_length = len.view(DType::kI32);
  if (!c.sink.empty()) a.attn_sink = sink.view(DType::kF32);
  a.softmax_scale = c.scale;
  Input<uint16_t> out(
      std::vector<uint16_t>(static_cast<size_t>(c.seq_q * c.heads_q * 512), kOutGarbage),
      {c.seq_q, c.heads_q, 512}, nc, kOutGarbage);
  Input<float> ml(std::vector<float>(static_cast<size_t>(c.seq_q * c.heads_q), kF32Garbage),
                  {c.seq_q, c.heads_q}, nc, kF32Garbage);
  Input<float> lse(std::vector<float>(static_cast<size_t>(c.seq_q * c.heads_q), kF32Garbage),
                   {c.seq_q, c.heads_q}, nc, kF32Garbage);
  a.out = out.view(DType::kBF16);
  a.max_logits = ml.view(DType::kF32);
  a.lse = lse.view(DType::kF32);
  r.status = openmla::sparse_prefill(a, options);
  r.out = nc ? out.padded.extract() : out.contiguous;
  r.max_logits = nc ? ml.padded.extract() : ml.contiguous;
  r.lse = nc ? lse.padded.extract() : lse.contiguous;
  return r;
}

std::vector<float> bf16_to_floats(const std::vector<uint16_t>& v) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = bf(v[i]);
  return f;
}

::testing::AssertionResult AllClose(const std::vector<float>& answer,
                                    const std::vector<float>& reference, double abs_tol,
                                    double rel_tol, double cos_tol) {
  if (answer.size() != reference.size())
    return ::testing::AssertionFailure()
           << "size mismatch " << answer.size() << " vs " << reference.size();
  std::vector<double> a(answer.begin(), answer.end()), r(reference.begin(), reference.end());
  for (size_t i = 0; i < a.size(); ++i) {
    const bool an = std::isnan(a[i]), rn = std::isnan(r[i]);
    const bool ap = std::isinf(a[i]) && a[i] > 0, rp = std::isinf(r[i]) && r[i] > 0;
    const bool am = std::isinf(a[i]) && a[i] < 0, rm = std::isinf(r[i]) && r[i] < 0;
    if (an != rn || ap != rp || am != rm)
      return ::testing::AssertionFailure()
             << "anomaly mismatch at " << i << ": " << a[i] << " vs " << r[i];
    if (an || ap || am) a[i] = r[i] = 0.0;
  }
  double dot = 0, sq = 0, rsq = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double abs_err = std::fabs(a[i] - r[i]);
    const double rel_err = abs_err / (std::fabs(r[i]) + 1e-6);
    if (!(abs_err < abs_tol || rel_err < rel_tol))
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << r[i];
    dot += a[i] * r[i];
    sq += a[i] * a[i] + r[i] * r[i];
    rsq += r[i] * r[i];
  }
  const double cos_diff = rsq < 1e-12 ? 0.0 : 1.0 - 2.0 * dot / sq;
  if (cos_diff > cos_tol) return ::testing::AssertionFailure() << "cos_diff " << cos_diff;
  return ::testing::AssertionSuccess();
}

NaiveRow naive_attention(const std::vector<float>& q, const std::vector<std::vector<float>>& keys,
                         double scale, int64_t dv, const float* sink, std::vector<double>* out) {
  out->assign(static_cast<size_t>(dv), 0.0);
  if (keys.empty())
    return {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()};
  std::vector<long double> s(keys.size());
  long double m = -std::numeric_limits<long double>::infinity();
  for (size_t t = 0; t < keys.size(); ++t) {
    long double d = 0;
    for (size_t i = 0; i < q.size(); ++i) d += static_cast<long double>(q[i]) * keys[t][i];
    s[t] = d * scale;
    m = std::max(m, s[t]);
  }
  long double sum = 0;
  for (auto v : s) sum += std::exp(v - m);
  const long double lse = m + std::log(sum);
  long double factor = 1;
  if (sink) factor = 1.0L / (1.0L + std::exp(static_cast<long double>(*sink) - lse));
  for (int64_t i = 0; i < dv; ++i) {
    long double acc = 0;
    for (size_t t = 0; t < keys.size(); ++t) acc += std::exp(s[t] - m) / sum * keys[t][i];
    (*out)[i] = static_cast<double>(acc * factor);
  }
  return {static_cast<double>(lse), static_cast<double>(m)};
}

::testing::AssertionResult Fails(const Status& st, const std::string& needle,
                                 openmla::StatusCode code) {
  if (st.ok()) {
    return ::testing::AssertionFailure()
           << "call succeeded, expected an error naming '" << needle << "'";
  }
  if (st.code() != code) return ::testing::AssertionFailure() << "wrong code: " << st.to_string();
  if (st.message().find(needle) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "message does not name '" << needle << "': " << st.message();
  }
  return ::testing::AssertionSuccess();
}

}  // namespace openmla_test
