// Lightning indexer, AVX-512 BF16-dot kernels ("*.avx512bf16", vdpbf16ps: two bf16 MACs per fp32
// lane, twice the fp32-FMA MAC rate on Zen 4), for CPUs with AVX512_BF16 and no AMX. The task
// structure, key walk, fused top-k and invariants are indexer_driver.h's (BfMath below).
// Exactness: every e4m3 value (subnormals included: 2^-9 is a normal bf16) is exactly a bf16, and
// the product of two is exact in fp32 (4 x 4 significant bits); only the summation rounds.
// Layouts: each task's q rows are converted ONCE into Qp [64 pairs][hp] of 32-bit bf16 pairs
// (low word d = 2p, high word d = 2p + 1; hp = heads rounded up to 16, pad heads and weights
// zero); blocks of kKeyBlock keys are dequantised ONCE into bf16 [keys][128] (= [keys][64] pairs):
// e4m3 through the VBMI tables of cpu/fp8_convert_avx512.h with the fp32 key scale applied after
// the dot; e2m1 as value x 2^(e_g - e_max) per 32-dim group, e_max the largest scale of a group
// with a non-zero code (exact; a group 2^-116 or more below it is dropped, far inside the
// tolerance) with 2^(e_max - 127) applied after.
// Tiling: per key block, passes over 4 (then 2, 1) head vectors, each sweeping the keys in tiles
// of up to 6 keys x J head vectors of accumulators: per pair p one Qp vector per head vector and
// a 32-bit broadcast of the key's pair p, acc[key][heads] = vdpbf16ps chain over p = 0..63; then
// part[key] += w[heads] * max(0, acc) for head vectors in ascending order; the logit is a fixed
// horizontal sum of part[key] times the key scale. The order of every operation on a logit is
// fixed by its key and row alone (bitwise thread- and batch-invariant).
#include <cstring>

#include "ops/indexer/cpu/indexer_fma.h"

namespace openmla {
namespace {

constexpr int kBfTileKeys = 6;
constexpr int64_t kPairs = 64;

/// The same 512 bits as bf16 pairs (memcpy: __m512bh is not may_alias in every compiler).
inline __m512bh as_bh(__m512i v) {
  __m512bh b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
}

/// 128 e4m3 codes -> 64 bf16 pairs (exact, NaN codes to bf16 NaN): the byte tables of
/// cpu/fp8_convert_avx512.h without its power-of-two scale step.
inline void dequant_e4m3_bf16(const uint8_t* codes, uint32_t* out) {
  const E4M3Lut t = load_e4m3_lut();
  const __m512i sign = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int c = 0; c < 128; c += 64) {
    const __m512i pc = _mm512_permutexvar_epi8(t.perm, _mm512_loadu_si512(codes + c));
    const __m512i lo = _mm512_permutex2var_epi8(t.lo0, pc, t.lo1);
    const __m512i hi = _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(t.hi0, pc, t.hi1), pc,
                                                 sign, 0xF8);  // hi | (pc & 0x80)
    _mm512_storeu_si512(out + c / 2, _mm512_unpacklo_epi8(lo, hi));
    _mm512_storeu_si512(out + c / 2 + 16, _mm512_unpackhi_epi8(lo, hi));
  }
}

/// The largest scale byte of the token's groups that hold a non-zero code (all groups when none
/// does, or when a scale is the NaN byte 0xFF, which must reach the logit as the reference's does).
inline int e2m1_ref_exponent(const uint8_t* codes, const uint8_t* scales) {
  int e_all = 0, e_nonzero = -1;
  for (int g = 0; g < 4; ++g) {
    e_all = std::max<int>(e_all, scales[g]);
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16 * g));
    if (!_mm_testz_si128(b, _mm_set1_epi8(0x77))) e_nonzero = std::max<int>(e_nonzero, scales[g]);
  }
  return e_nonzero < 0 || e_all == 0xFF ? e_all : e_nonzero;
}

/// 64 bytes of e2m1 pairs + 4 ue8m0 scales -> 64 bf16 pairs of value x 2^(e_g - e_max), e_max of
/// e2m1_ref_exponent; returns 2^(e_max - 127). A group 2^-116 or more below e_max is dropped (its
/// products with e4m3 q would fall below the fp32 normals, which VDPBF16PS flushes), as is an
/// all-zero group above it.
inline float dequant_e2m1_bf16(const uint8_t* codes, const uint8_t* scales, uint32_t* out) {
  const int e_max = e2m1_ref_exponent(codes, scales);
  const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
  const __m128i nib = _mm_set1_epi8(0x0F);
  for (int g = 0; g < 4; ++g) {
    const int rel = scales[g] - e_max;  // the table holds twice the value: 2^(rel - 1) undoes it
    const float f = rel <= -116 || rel > 0 ? 0.0f : ue8m0_to_float(static_cast<uint8_t>(126 + rel));
    const __m512 scale = _mm512_set1_ps(f);
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16 * g));
    const __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(b, nib));
    const __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(b, 4), nib));
    const __m512 a =
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_unpacklo_epi8(lo, hi))), scale);
    const __m512 c =
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_unpackhi_epi8(lo, hi))), scale);
    const __m512bh both = _mm512_cvtne2ps_pbh(c, a);  // a -> low 16 words, c -> high 16 words
    _mm512_storeu_si512(out + 16 * g, reinterpret_cast<const __m512i&>(both));
  }
  return ue8m0_to_float(static_cast<uint8_t>(e_max));
}

inline void convert_row_bf16(const IndexerQuery& query, int64_t r, int64_t hp, uint32_t* qp,
                             float* w) {
  const uint8_t* q = query.q_row(r);
  const float* wr = query.w_row(r);
  for (int64_t h = 0; h < hp; ++h) {
    const bool real = h < query.heads;
    w[h] = real ? wr[h * query.w_stride_head] : 0.0f;
    const uint8_t* qh = q + h * query.q_stride_head;
    for (int64_t p = 0; p < kPairs; ++p)
      qp[p * hp + h] = real ? kE4M3Bf16.bits[qh[2 * p]] |
                                  static_cast<uint32_t>(kE4M3Bf16.bits[qh[2 * p + 1]]) << 16
                            : 0u;
  }
}

// part[r] += sum over head vectors [jv, jv + J) of w * ReLU(K[r] . Qp[:, those heads]).
template <int R, int J>
inline void bf16_tile(const uint32_t* kb, const uint32_t* qp, const float* w, int64_t hp,
                      int64_t jv, __m512* part) {
  __m512 acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = _mm512_setzero_ps();
  const uint32_t* q = qp + jv * 16;
  for (int64_t p = 0; p < kPairs; ++p) {
    __m512bh qv[J];
    for (int j = 0; j < J; ++j) qv[j] = as_bh(_mm512_loadu_si512(q + p * hp + 16 * j));
    for (int r = 0; r < R; ++r) {
      const __m512bh k = as_bh(_mm512_set1_epi32(static_cast<int>(kb[r * kPairs + p])));
      for (int j = 0; j < J; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], k, qv[j]);
    }
  }
  for (int j = 0; j < J; ++j) {
    const __m512 wv = _mm512_loadu_ps(w + (jv + j) * 16);
    for (int r = 0; r < R; ++r) part[r] = _mm512_fmadd_ps(wv, ix_relu(acc[r][j]), part[r]);
  }
}

/// The last `left` (< R) keys of a pass, as one tile of exactly that many keys.
template <int R, int J>
inline void bf16_tail(const uint32_t* kb, int64_t left, const RowQ<uint32_t>& row, int64_t hp,
                      int64_t jv, __m512* part) {
  if (left == R) {
    bf16_tile<R, J>(kb, row.qt, row.w, hp, jv, part);
  } else if constexpr (R > 1) {
    bf16_tail<R - 1, J>(kb, left, row, hp, jv, part);
  }
}

template <int J>
inline void bf16_pass(const uint32_t* kb, int64_t n, const RowQ<uint32_t>& row, int64_t hp,
                      int64_t jv, __m512* part) {
  int64_t i = 0;
  for (; i + kBfTileKeys <= n; i += kBfTileKeys)
    bf16_tile<kBfTileKeys, J>(kb + kPairs * i, row.qt, row.w, hp, jv, part + i);
  if (i < n) bf16_tail<kBfTileKeys - 1, J>(kb + kPairs * i, n - i, row, hp, jv, part + i);
}

struct BfMath {
  using Key = uint32_t;
  using QElem = uint32_t;
  static constexpr int64_t kKeyElems = kPairs;
  static int64_t padded_heads(int64_t heads) { return (heads + 15) / 16 * 16; }
  static int64_t q_elems(int64_t hp) { return kPairs * hp; }
  static void convert_row(const IndexerQuery& query, int64_t r, int64_t hp, uint32_t* qp,
                          float* w) {
    convert_row_bf16(query, r, hp, qp, w);
  }
  static float dequant(IndexerKeyFormat format, const uint8_t* codes, const uint8_t* scales,
                       uint32_t* out) {
    if (format == IndexerKeyFormat::kFp8) {
      dequant_e4m3_bf16(codes, out);
      return load_unaligned<float>(scales);
    }
    return dequant_e2m1_bf16(codes, scales, out);
  }
  /// out[i] = logit of key kb[i] (i < n <= kKeyBlock): head vectors outer (a Qp slice stays in
  /// L1 while the block's keys stream past), each key's partial sum in ascending head order.
  static void score_keys(const uint32_t* kb, const float* scale, int64_t n,
                         const RowQ<uint32_t>& row, int64_t hp, float* out) {
    __m512 part[kKeyBlock];
    for (int64_t i = 0; i < n; ++i) part[i] = _mm512_setzero_ps();
    const int64_t hv = hp / 16;
    int64_t jv = 0;
    for (; jv + 4 <= hv; jv += 4) bf16_pass<4>(kb, n, row, hp, jv, part);
    for (; jv + 2 <= hv; jv += 2) bf16_pass<2>(kb, n, row, hp, jv, part);
    for (; jv < hv; ++jv) bf16_pass<1>(kb, n, row, hp, jv, part);
    for (int64_t i = 0; i < n; ++i) out[i] = ix_hsum(part[i]) * scale[i];
  }
};

}  // namespace

const KernelEntry kMqaLogitsAvx512Bf16 = {
    "mqa_logits.avx512bf16", Op::kMqaLogits, Isa::kAvx512Bf16,
    indexer_any_problem,     nullptr,        indexer_mqa_run<BfMath>};
const KernelEntry kPagedMqaLogitsAvx512Bf16 = {"paged_mqa_logits.avx512bf16",
                                               Op::kPagedMqaLogits,
                                               Isa::kAvx512Bf16,
                                               indexer_any_problem,
                                               nullptr,
                                               indexer_paged_run<BfMath>};
const KernelEntry kPagedIndexerTopkAvx512Bf16 = {"paged_indexer_topk.avx512bf16",
                                                 Op::kPagedIndexerTopk,
                                                 Isa::kAvx512Bf16,
                                                 indexer_any_problem,
                                                 nullptr,
                                                 indexer_fused_run<BfMath>};

}  // namespace openmla
