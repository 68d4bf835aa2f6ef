// KV compressor (CSA ratio 4 / HCA ratio 128): every kernel against the double reference kernel
// and against an independent transcription of DeepSeek V4's prefill branch (inference/model.py
// Compressor.forward with start_pos == 0: overlap_transform, per-channel softmax over the window,
// RMSNorm, RoPE at k * ratio), computed here from a and z without the state cache. Also: MODEL1
// entry bytes equal the independent quantiser model applied to the kernel's own bf16 latent;
// decode token by token equals one prefill call over the chunk (state and cache bytes); the CSA
// k = 0 boundary; odd page and state-block sizes; bitwise thread invariance. Indexer keys (head
// dim 128, Hadamard): the same checks, FP8 cache bytes equal indexer_write_keys of the latent.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "dispatch/registry.h"
#include "openmla/compressor.h"
#include "openmla/indexer_cache.h"
#include "support/test_support.h"

namespace {

using namespace openmla_test;

/// S sequences of L tokens each, paged state (block size bs) and paged entry cache (page P); head
/// dim d 512 (MODEL1 entries) or 128 (indexer keys, with the Hadamard rotation).
struct Case {
  int64_t ratio, seqs, len, bs, page, d, coff, width, window;
  std::vector<float> a, z, ape, weight, cos_sin;              // a, z: [seqs * len, width]
  std::vector<std::vector<int64_t>> state_blocks, kv_blocks;  // per sequence, permuted
  int64_t state_num_blocks, kv_num_blocks;

  Case(int64_t ratio_in, int64_t seqs_in, int64_t len_in, int64_t bs_in, int64_t page_in,
       uint32_t seed, int64_t d_in = 512)
      : ratio(ratio_in), seqs(seqs_in), len(len_in), bs(bs_in), page(page_in), d(d_in) {
    coff = ratio == 4 ? 2 : 1;
    width = coff * d;
    window = coff * ratio;
    Rng rng(seed);
    auto fill = [&](std::vector<float>* v, int64_t n, double sd, double mean) {
      v->resize(static_cast<size_t>(n));
      for (float& x : *v) x = static_cast<float>(mean + sd * rng.normal());
    };
    fill(&a, seqs * len * width, 1.0, 0.0);
    fill(&z, seqs * len * width, 2.0, 0.0);
    fill(&ape, ratio * width, 0.5, 0.0);
    fill(&weight, d, 0.2, 1.0);
    cos_sin.resize(static_cast<size_t>(len * 64));
    EXPECT_TRUE(
        openmla::compressor_rope_table(160000.0, 16.0, 65536, 32.0, 1.0,
                                       contiguous_view(cos_sin.data(), DType::kF32, {len, 64}))
            .ok());
    state_num_blocks = place(rng, (len + bs - 1) / bs, &state_blocks);
    kv_num_blocks = place(rng, (len / ratio + page - 1) / page, &kv_blocks);
  }
  int64_t place(Rng& rng, int64_t per_seq, std::vector<std::vector<int64_t>>* blocks) {
    const std::vector<int64_t> perm = rng.permutation(seqs * per_seq + 1);
    blocks->assign(static_cast<size_t>(seqs), {});
    for (int64_t s = 0; s < seqs; ++s)
      for (int64_t b = 0; b < per_seq; ++b) (*blocks)[s].push_back(perm[s * per_seq + b]);
    return seqs * per_seq + 1;
  }
  int64_t state_slot(int64_t s, int64_t pos) const {
    return pos < 0 ? -1 : state_blocks[s][pos / bs] * bs + pos % bs;
  }
  int64_t kv_slot(int64_t s, int64_t pos) const {
    if ((pos + 1) % ratio != 0) return -1;
    const int64_t k = pos / ratio;
    return kv_blocks[s][k / page] * page + k % page;
  }
};

/// The caches of one run: `format` MODEL1 or BF16, or (fp8_keys) an FP8 indexer cache.
struct Caches {
  std::vector<float> state;
  std::vector<uint8_t> kv;  // MODEL1 pages, bf16 [blocks, page, 1, d] or 132-B indexer pages
  KvFormat format;
  bool fp8_keys;
  int64_t page_bytes;
  Caches(const Case& c, KvFormat f, bool fp8_keys_in = false) : format(f), fp8_keys(fp8_keys_in) {
    state.assign(static_cast<size_t>(c.state_num_blocks * c.bs * 2 * c.width), -12345.0f);
    if (fp8_keys) {
      page_bytes = 132 * c.page;
    } else {
      openmla::kv_page_bytes(f, c.page, c.d, 1, &page_bytes);
    }
    kv.assign(static_cast<size_t>(c.kv_num_blocks * page_bytes), 0xEE);
  }
  TensorView kv_view(const Case& c) {
    if (fp8_keys) return contiguous_view(kv.data(), DType::kU8, {c.kv_num_blocks, c.page, 1, 132});
    const int64_t bpt = format == KvFormat::kModel1 ? 584 : c.d;
    return openmla::make_strided_tensor(
        kv.data(), format == KvFormat::kModel1 ? DType::kU8 : DType::kBF16,
        {c.kv_num_blocks, c.page, 1, bpt},
        {format == KvFormat::kModel1 ? page_bytes : page_bytes / 2, bpt, bpt, 1});
  }
  TensorView state_view(const Case& c) {
    return contiguous_view(state.data(), DType::kF32, {c.state_num_blocks, c.bs, 2 * c.width});
  }
};

/// Runs save + store for the tokens `toks` (pairs (sequence, position)) in one call each.
Status step(const Case& c, Caches* r, const std::vector<std::pair<int64_t, int64_t>>& toks,
            const openmla::Options& o) {
  const int64_t n = static_cast<int64_t>(toks.size());
  std::vector<float> a, z;
  std::vector<int64_t> pos, slots, gather, kv_slots;
  for (auto [s, p] : toks) {
    const size_t row = static_cast<size_t>((s * c.len + p) * c.width);
    a.insert(a.end(), c.a.begin() + row, c.a.begin() + row + c.width);
    z.insert(z.end(), c.z.begin() + row, c.z.begin() + row + c.width);
    pos.push_back(p);
    slots.push_back(c.state_slot(s, p));
    for (int64_t w = 0; w < c.window; ++w) gather.push_back(c.state_slot(s, p - c.window + 1 + w));
    kv_slots.push_back(c.kv_slot(s, p));
  }
  openmla::CompressorSaveStatesArgs sa;
  sa.kv = contiguous_view(a.data(), DType::kF32, {n, c.width});
  sa.score = contiguous_view(z.data(), DType::kF32, {n, c.width});
  sa.ape = contiguous_view(const_cast<float*>(c.ape.data()), DType::kF32, {c.ratio, c.width});
  sa.positions = contiguous_view(pos.data(), DType::kI64, {n});
  sa.state_cache = r->state_view(c);
  sa.slot_mapping = contiguous_view(slots.data(), DType::kI64, {n});
  Status st = openmla::compressor_save_states(sa, o);
  if (!st.ok()) return st;
  openmla::CompressorStoreArgs ca;
  ca.state_cache = r->state_view(c);
  ca.gather_slots = contiguous_view(gather.data(), DType::kI64, {n, c.window});
  ca.positions = sa.positions;
  ca.kv_slot_mapping = contiguous_view(kv_slots.data(), DType::kI64, {n});
  ca.rms_norm_weight = contiguous_view(const_cast<float*>(c.weight.data()), DType::kF32, {c.d});
  ca.cos_sin_cache =
      contiguous_view(const_cast<float*>(c.cos_sin.data()), DType::kF32, {c.len, 64});
  ca.kv_cache = r->kv_view(c);
  ca.compress_ratio = c.ratio;
  return openmla::compressor_store(ca, o);
}

Caches prefill(const Case& c, KvFormat f, const char* kernel, int threads = 2,
               bool fp8_keys = false) {
  Caches r(c, f, fp8_keys);
  std::vector<std::pair<int64_t, int64_t>> toks;
  for (int64_t s = 0; s < c.seqs; ++s)
    for (int64_t p = 0; p < c.len; ++p) toks.push_back({s, p});
  openmla::Options o;
  o.kernel = kernel;
  o.num_threads = threads;
  const Status st = step(c, &r, toks, o);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return r;
}

/// bf16 latent of entry k of sequence s in a bf16 run.
std::vector<uint16_t> entry_latent(const Case& c, const Caches& r, int64_t s, int64_t k) {
  const int64_t slot = c.kv_slot(s, k * c.ratio + c.ratio - 1);
  std::vector<uint16_t> v(c.d);
  std::memcpy(v.data(), r.kv.data() + slot * c.d * 2, c.d * 2);
  return v;
}

/// DeepSeek's prefill formula for entry k of sequence s, from a and z directly (double; the
/// reference's bf16 roundings; head dim 128: Hadamard as a +-1 matrix product). bf16 latent.
std::vector<uint16_t> model_entry(const Case& c, int64_t s, int64_t k) {
  const int64_t kD = c.d, nope = c.d - 64;
  std::vector<double> x(kD);
  for (int64_t j = 0; j < kD; ++j) {
    std::vector<std::pair<double, double>> slots;  // (score, kv)
    auto add = [&](int64_t t, int64_t ch) {
      const size_t row = static_cast<size_t>((s * c.len + t) * c.width);
      slots.push_back({static_cast<double>(c.z[row + ch]) + c.ape[(t % c.ratio) * c.width + ch],
                       c.a[row + ch]});
    };
    for (int64_t i = 0; i < c.ratio; ++i) {
      if (c.coff == 2 && k > 0) add((k - 1) * c.ratio + i, j);  // previous window, A half
      add(k * c.ratio + i, (c.coff - 1) * kD + j);              // own window (CSA: B half)
    }
    double m = -INFINITY, num = 0, den = 0;
    for (auto& sl : slots) m = std::max(m, sl.first);
    for (auto& sl : slots) {
      den += std::exp(sl.first - m);
      num += std::exp(sl.first - m) * sl.second;
    }
    x[j] = openmla::round_to_bf16(static_cast<float>(num / den));
  }
  double ss = 0;
  for (double v : x) ss += v * v;
  const double r = 1.0 / std::sqrt(ss / kD + 1e-6);
  for (int64_t j = 0; j < kD; ++j) x[j] = openmla::round_to_bf16(float(c.weight[j] * x[j] * r));
  const int64_t p = k * c.ratio;
  for (int64_t i = 0; i < 32; ++i) {
    const double cs = c.cos_sin[p * 64 + i], sn = c.cos_sin[p * 64 + 32 + i];
    const double u = x[nope + 2 * i], v = x[nope + 2 * i + 1];
    x[nope + 2 * i] = openmla::round_to_bf16(static_cast<float>(u * cs - v * sn));
    x[nope + 2 * i + 1] = openmla::round_to_bf16(static_cast<float>(u * sn + v * cs));
  }
  if (kD == 128) {  // H[i][j] = (-1)^popcount(i & j) / sqrt(128)
    const std::vector<double> y = x;
    for (int64_t i = 0; i < kD; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < kD; ++j) acc += (__builtin_popcountll(i & j) % 2 ? -y[j] : y[j]);
      x[i] = acc / std::sqrt(128.0);
    }
  }
  std::vector<uint16_t> out(kD);
  for (int64_t j = 0; j < kD; ++j) out[j] = openmla::float_to_bf16(static_cast<float>(x[j]));
  return out;
}

/// Latents agree within `ulps` bf16 units of the larger magnitude (plus a tiny absolute slack).
/// Indexer keys (128, Hadamard-mixed): a bf16 flip before the rotation moves every output by up
/// to an ulp of the largest input, so small outputs get that absolute slack too.
::testing::AssertionResult Close(const std::vector<uint16_t>& x, const std::vector<uint16_t>& y,
                                 int ulps) {
  double slack = 1e-6;
  if (x.size() == 128)
    for (uint16_t h : y) slack = std::max(slack, ulps * std::fabs(bf(h)) / 256.0);
  for (size_t i = 0; i < x.size(); ++i) {
    const double u = bf(x[i]), v = bf(y[i]);
    const double tol = ulps * std::max(std::fabs(u), std::fabs(v)) / 128.0 + slack;
    if (!(std::fabs(u - v) <= tol))
      return ::testing::AssertionFailure() << "element " << i << ": " << u << " vs " << v;
  }
  return ::testing::AssertionSuccess();
}

std::vector<const char*> fast_kernels() {
  std::vector<const char*> names;
  for (const auto* k : openmla::kernels_for(openmla::Op::kCompressor))
    if (k->isa != openmla::Isa::kNone && openmla::kernel_runnable(*k)) names.push_back(k->name);
  return names;
}

struct Shape {
  int64_t ratio, seqs, len, bs, page, d;
};
const Shape kShapes[] = {{4, 2, 24, 4, 3, 512},    {4, 3, 13, 5, 64, 512}, {128, 1, 256, 8, 2, 512},
                         {128, 2, 131, 3, 1, 512}, {4, 2, 22, 4, 5, 128},  {4, 1, 12, 3, 64, 128}};

TEST(Compressor, ReferenceMatchesDeepSeekPrefillFormula) {
  for (const Shape& sh : kShapes) {
    const Case c(sh.ratio, sh.seqs, sh.len, sh.bs, sh.page, 11, sh.d);
    const Caches r = prefill(c, KvFormat::kBF16, "compressor.ref");
    for (int64_t s = 0; s < c.seqs; ++s)
      for (int64_t k = 0; k < c.len / c.ratio; ++k)
        EXPECT_TRUE(Close(entry_latent(c, r, s, k), model_entry(c, s, k), 1))
            << "ratio " << c.ratio << " seq " << s << " entry " << k;
  }
}

TEST(Compressor, FastKernelsMatchReference) {
  for (const char* kernel : fast_kernels()) {
    for (const Shape& sh : kShapes) {
      const Case c(sh.ratio, sh.seqs, sh.len, sh.bs, sh.page, 12, sh.d);
      const Caches ref = prefill(c, KvFormat::kBF16, "compressor.ref");
      const Caches fast = prefill(c, KvFormat::kBF16, kernel);
      for (int64_t s = 0; s < c.seqs; ++s)
        for (int64_t k = 0; k < c.len / c.ratio; ++k)
          EXPECT_TRUE(Close(entry_latent(c, fast, s, k), entry_latent(c, ref, s, k), 2))
              << kernel << " ratio " << c.ratio << " seq " << s << " entry " << k;
    }
  }
}

TEST(Compressor, Model1BytesAreTheQuantisedLatent) {
  std::vector<const char*> kernels = fast_kernels();
  kernels.push_back("compressor.ref");
  for (const char* kernel : kernels) {
    const Case c(4, 2, 20, 4, 3, 13);
    const Caches bf16 = prefill(c, KvFormat::kBF16, kernel);
    const Caches fp8 = prefill(c, KvFormat::kModel1, kernel);
    for (int64_t s = 0; s < c.seqs; ++s) {
      for (int64_t k = 0; k < c.len / c.ratio; ++k) {
        uint8_t rec[576], scales[7];
        model_quantize_token(KvFormat::kModel1, entry_latent(c, bf16, s, k).data(), rec, scales);
        const int64_t slot = c.kv_slot(s, k * c.ratio + c.ratio - 1);
        const uint8_t* page = fp8.kv.data() + (slot / c.page) * fp8.page_bytes;
        EXPECT_EQ(0, std::memcmp(rec, page + (slot % c.page) * 576, 576)) << kernel << " " << k;
        EXPECT_EQ(0, std::memcmp(scales, page + c.page * 576 + (slot % c.page) * 8, 7));
        EXPECT_EQ(page[c.page * 576 + (slot % c.page) * 8 + 7], 0);
      }
    }
  }
}

TEST(Compressor, IndexerKeysAreWrittenByTheIndexerCacheWriter) {
  std::vector<const char*> kernels = fast_kernels();
  kernels.push_back("compressor.ref");
  for (const char* kernel : kernels) {
    const Case c(4, 2, 20, 4, 3, 17, 128);
    const Caches bf16 = prefill(c, KvFormat::kBF16, kernel);
    const Caches fp8 = prefill(c, KvFormat::kBF16, kernel, 2, true);
    Caches want(c, KvFormat::kBF16, true);
    for (int64_t s = 0; s < c.seqs; ++s) {
      for (int64_t k = 0; k < c.len / c.ratio; ++k) {
        std::vector<uint16_t> key = entry_latent(c, bf16, s, k);
        int64_t slot = c.kv_slot(s, k * c.ratio + c.ratio - 1);
        ASSERT_TRUE(openmla::indexer_write_keys(contiguous_view(key.data(), DType::kBF16, {1, 128}),
                                                contiguous_view(&slot, DType::kI64, {1}),
                                                openmla::IndexerKeyFormat::kFp8, want.kv_view(c))
                        .ok());
      }
    }
    EXPECT_TRUE(SameBits(fp8.kv, want.kv)) << kernel;
  }
}

TEST(Compressor, DecodeTokenByTokenEqualsPrefill) {
  std::vector<const char*> kernels = fast_kernels();
  kernels.push_back("compressor.ref");
  for (const char* kernel : kernels) {
    for (const Shape& sh : kShapes) {
      const Case c(sh.ratio, sh.seqs, sh.len, sh.bs, sh.page, 14, sh.d);
      const bool keys = c.d == 128;
      const Caches whole = prefill(c, KvFormat::kModel1, kernel, 2, keys);
      Caches steps(c, KvFormat::kModel1, keys);
      openmla::Options o;
      o.kernel = kernel;
      for (int64_t p = 0; p < c.len; ++p) {
        std::vector<std::pair<int64_t, int64_t>> toks;
        for (int64_t s = 0; s < c.seqs; ++s) toks.push_back({s, p});
        ASSERT_TRUE(step(c, &steps, toks, o).ok());
      }
      EXPECT_TRUE(SameBits(steps.kv, whole.kv)) << kernel << " ratio " << c.ratio;
      EXPECT_TRUE(SameBits(steps.state, whole.state)) << kernel;
    }
  }
}

TEST(Compressor, ChunkedPrefillEqualsOneChunkAndWritesOnlyEntries) {
  for (const Shape& sh : kShapes) {
    const Case c(sh.ratio, sh.seqs, sh.len, sh.bs, sh.page, 18, sh.d);
    const KvFormat f = c.d == 128 ? KvFormat::kBF16 : KvFormat::kModel1;
    const Caches whole = prefill(c, f, nullptr);
    Caches chunks(c, f);
    const int64_t cuts[] = {0, c.len / 3 + 1, c.len / 2 + 2, c.len};  // odd chunk lengths
    for (int i = 0; i < 3; ++i) {
      std::vector<std::pair<int64_t, int64_t>> toks;
      for (int64_t s = 0; s < c.seqs; ++s)
        for (int64_t p = cuts[i]; p < cuts[i + 1]; ++p) toks.push_back({s, p});
      ASSERT_TRUE(step(c, &chunks, toks, {}).ok());
    }
    EXPECT_TRUE(SameBits(chunks.kv, whole.kv)) << "ratio " << c.ratio << " d " << c.d;
    // Slots no entry names keep their 0xEE fill (MODEL1: the record and its scale record).
    std::vector<bool> used(static_cast<size_t>(c.kv_num_blocks * c.page), false);
    for (int64_t s = 0; s < c.seqs; ++s)
      for (int64_t p = 0; p < c.len; ++p)
        if (c.kv_slot(s, p) >= 0) used[static_cast<size_t>(c.kv_slot(s, p))] = true;
    const int64_t rec = f == KvFormat::kModel1 ? 576 : 2 * c.d;
    for (int64_t slot = 0; slot < c.kv_num_blocks * c.page; ++slot) {
      if (used[static_cast<size_t>(slot)]) continue;
      const uint8_t* page = whole.kv.data() + (slot / c.page) * whole.page_bytes;
      for (int64_t i = 0; i < rec; ++i) ASSERT_EQ(page[(slot % c.page) * rec + i], 0xEE);
    }
  }
}

TEST(Compressor, CsaFirstEntryIgnoresTheMissingPreviousWindow) {
  // Entry 0 must not depend on the (absent) previous window: poison the rows that would be read
  // if -1 slots were dereferenced, i.e. every state row not written by the 4 tokens.
  for (const char* kernel : fast_kernels()) {
    const Case c(4, 1, 4, 4, 1, 15);
    Caches r(c, KvFormat::kBF16);
    std::fill(r.state.begin(), r.state.end(), NAN);
    std::vector<std::pair<int64_t, int64_t>> toks = {{0, 0}, {0, 1}, {0, 2}, {0, 3}};
    openmla::Options o;
    o.kernel = kernel;
    ASSERT_TRUE(step(c, &r, toks, o).ok());
    EXPECT_TRUE(Close(entry_latent(c, r, 0, 0), model_entry(c, 0, 0), 2)) << kernel;
  }
}

TEST(Compressor, ThreadCountDoesNotChangeBits) {
  for (const char* kernel : fast_kernels()) {
    for (const Shape& sh : kShapes) {
      const Case c(sh.ratio, sh.seqs, sh.len, sh.bs, sh.page, 16, sh.d);
      const bool keys = c.d == 128;
      const Caches one = prefill(c, KvFormat::kModel1, kernel, 1, keys);
      for (int threads : {2, 3})
        EXPECT_TRUE(SameBits(prefill(c, KvFormat::kModel1, kernel, threads, keys).kv, one.kv))
            << kernel << " threads " << threads;
    }
  }
}

}  // namespace
