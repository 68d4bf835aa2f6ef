// Sparse decode, AVX2 + FMA fp32 kernel ("sparse_decode.avx2"), for CPUs without AVX-512.
// Same algorithm and layouts as sparse_decode_avx512.cpp with 8-wide vectors: split plan and
// compaction from sparse_decode_cpu.h; each valid token is gathered and dequantised once per
// block (exact bf16 via the portable table path of cpu/fp8_convert.h, widened to fp32) and shared
// by all heads. Q^T fp32 [head_dim][hp] (hp = heads rounded up to 8), K fp32 [rows][head_dim]
// (V = K[:, 0:512]), scores/P [rows][hp], O fp32 [hp][512].
// QK: 4-8 rows x 1-2 head vectors of accumulators with broadcast K; softmax: lazy online update
// in base 2 (cpu/softmax_avx2.h), P in fp32; PV: 1-2 heads x 32-64 columns of accumulators.
// Invariants: invalid slots never read; pad rows zero with P = 0; thread-count invariant.
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/fp8_convert.h"
#include "cpu/softmax_avx2.h"
#include "ops/sparse_decode/cpu/sparse_decode_cpu.h"

namespace openmla {
namespace {

constexpr int64_t kBlockRows = 64;
constexpr float kLog2e = 1.4426950408889634f;

struct Workspace {
  AlignedBuffer<float> qt, kf, st, acc, m, l, alpha;
  AlignedBuffer<uint16_t> kb;
  AlignedBuffer<TokenRef> refs;
};

void dequant_token(KvFormat format, int64_t d_qk, const TokenRef& t, uint16_t* out) {
  const uint8_t* rec = t.rec;
  if (format == KvFormat::kV32) {
    for (int tile = 0; tile < 4; ++tile) {
      const float scale = load_unaligned<float>(rec + 512 + 4 * tile);
      dequant_tile_portable(rec + 128 * tile, 128, pow2_scale_add_f32(scale), scale, out + 128 * tile);
    }
    std::memcpy(out + 512, rec + 528, 128);
  } else if (format == KvFormat::kModel1) {
    for (int tile = 0; tile < 7; ++tile) {
      const uint8_t code = t.scales[tile];
      dequant_tile_portable(rec + 64 * tile, 64, pow2_scale_add_ue8m0(code), ue8m0_to_float(code),
                            out + 64 * tile);
    }
    std::memcpy(out + 448, rec + 448, 128);
  } else {
    std::memcpy(out, rec, static_cast<size_t>(d_qk) * 2);
  }
}

template <int R, int J>
inline void qk_block(const float* kf, int64_t d_qk, const float* qt, int64_t hp, float* st) {
  __m256 acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = _mm256_setzero_ps();
  for (int64_t d = 0; d < d_qk; ++d) {
    __m256 qv[J];
    for (int j = 0; j < J; ++j) qv[j] = _mm256_loadu_ps(qt + d * hp + 8 * j);
    for (int r = 0; r < R; ++r) {
      const __m256 k = _mm256_broadcast_ss(kf + r * d_qk + d);
      for (int j = 0; j < J; ++j) acc[r][j] = _mm256_fmadd_ps(k, qv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) _mm256_storeu_ps(st + r * hp + 8 * j, acc[r][j]);
}

template <int R>
void qk_rows(const float* kf, int64_t d_qk, const float* qt, int64_t hp, float* st) {
  const int64_t hv = hp / 8;
  for (int64_t j = 0; j < hv; j += 2) {
    if (hv - j >= 2) qk_block<R, 2>(kf, d_qk, qt + 8 * j, hp, st + 8 * j);
    else qk_block<R, 1>(kf, d_qk, qt + 8 * j, hp, st + 8 * j);
  }
}

template <int H, int VB>
inline void pv_block(const float* pt, int64_t hp, const float* kf, int64_t d_qk, int64_t n,
                     float* acc) {
  __m256 o[H][VB];
  for (int h = 0; h < H; ++h)
    for (int v = 0; v < VB; ++v) o[h][v] = _mm256_loadu_ps(acc + h * kDimV + 8 * v);
  for (int64_t t = 0; t < n; ++t) {
    __m256 vv[VB];
    for (int v = 0; v < VB; ++v) vv[v] = _mm256_loadu_ps(kf + t * d_qk + 8 * v);
    for (int h = 0; h < H; ++h) {
      const __m256 p = _mm256_broadcast_ss(pt + t * hp + h);
      for (int v = 0; v < VB; ++v) o[h][v] = _mm256_fmadd_ps(p, vv[v], o[h][v]);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int v = 0; v < VB; ++v) _mm256_storeu_ps(acc + h * kDimV + 8 * v, o[h][v]);
}

void pv(const float* pt, int64_t hp, int64_t heads, const float* kf, int64_t d_qk, int64_t n,
        float* acc) {
  int64_t h = 0;
  for (; h + 2 <= heads; h += 2)
    for (int64_t v = 0; v < kDimV; v += 32)
      pv_block<2, 4>(pt + h, hp, kf + v, d_qk, n, acc + h * kDimV + v);
  if (h < heads)
    for (int64_t v = 0; v < kDimV; v += 64)
      pv_block<1, 8>(pt + h, hp, kf + v, d_qk, n, acc + h * kDimV + v);
}

void run_piece(const SparseDecodeParams& p, const PieceTask& t, const PieceOutput& out) {
  static thread_local Workspace ws;
  const int64_t d_qk = p.head_dim, heads = t.h_end - t.h_begin;
  const int64_t hp = (heads + 7) / 8 * 8;
  const int64_t row_align = hp == 8 ? 8 : 4;
  float* qt = ws.qt.get(d_qk * hp);
  float* kf = ws.kf.get((kBlockRows + 8) * d_qk);
  float* st = ws.st.get((kBlockRows + 8) * hp);
  float* acc = ws.acc.get(hp * kDimV);
  float* m = ws.m.get(hp);
  float* l = ws.l.get(hp);
  float* alpha = ws.alpha.get(hp);
  uint16_t* kb = ws.kb.get(d_qk);
  TokenRef* refs = ws.refs.get(kBlockRows);

  const uint16_t* q = p.q + t.b * p.q_stride[0] + t.s * p.q_stride[1] + t.h_begin * p.q_stride[2];
  std::memset(qt, 0, sizeof(float) * d_qk * hp);
  for (int64_t h = 0; h < heads; ++h) {
    const uint16_t* qh = q + h * p.q_stride[2];
    for (int64_t d = 0; d < d_qk; ++d) qt[d * hp + h] = bf16_to_float(qh[d]);
  }
  std::memset(acc, 0, sizeof(float) * hp * kDimV);
  for (int64_t h = 0; h < hp; ++h) {
    m[h] = -std::numeric_limits<float>::infinity();
    l[h] = 0.0f;
  }
  const float c = p.softmax_scale * kLog2e;
  SlotCursor cursor(p, t.b, t.s, t.begin, t.end);
  for (;;) {
    const int64_t n = cursor.next(refs, kBlockRows);
    if (n == 0) break;
    for (int64_t t = 0; t < n; ++t) {
      if (t + 4 < n) {
        for (int off = 0; off < 704; off += 64)
          _mm_prefetch(reinterpret_cast<const char*>(refs[t + 4].rec) + off, _MM_HINT_T0);
      }
      dequant_token(p.kv.format, d_qk, refs[t], kb);
      float* row = kf + t * d_qk;
      for (int64_t d = 0; d < d_qk; d += 8) {
        const __m128i w = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kb + d));
        _mm256_storeu_ps(row + d, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(w), 16)));
      }
    }
    const int64_t n_pad = (n + row_align - 1) / row_align * row_align;
    std::memset(kf + n * d_qk, 0, sizeof(float) * (n_pad - n) * d_qk);
    for (int64_t r = 0; r < n_pad; r += row_align) {
      if (row_align == 8) qk_rows<8>(kf + r * d_qk, d_qk, qt, hp, st + r * hp);
      else qk_rows<4>(kf + r * d_qk, d_qk, qt, hp, st + r * hp);
    }
    if (softmax_block_avx2(st, n, n_pad, hp, c, m, l, alpha)) {
      for (int64_t h = 0; h < heads; ++h) {
        if (alpha[h] == 1.0f) continue;
        const __m256 a = _mm256_set1_ps(alpha[h]);
        for (int64_t v = 0; v < kDimV; v += 8)
          _mm256_storeu_ps(acc + h * kDimV + v, _mm256_mul_ps(a, _mm256_loadu_ps(acc + h * kDimV + v)));
      }
    }
    pv(st, hp, heads, kf, d_qk, n, acc);
  }
  finish_piece_state(t, m, l, acc, kDimV, out);
}

Status avx2_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const SparseDecodeParams*>(params);
  return run_split_tasks(p, config,
                         [&](const PieceTask& t, const PieceOutput& out) { run_piece(p, t, out); });
}

}  // namespace

const KernelEntry kSparseDecodeAvx2 = {"sparse_decode.avx2", Op::kSparseDecode, Isa::kAvx2,
                                       sd_unsupported, sd_choose_splits, avx2_run};

}  // namespace openmla
