// Sparse decode, AVX-512 fp32-FMA kernel ("sparse_decode.avx512"), for CPUs without AMX.
// Algorithm: split plan + compaction of valid slots from sparse_decode_cpu.h; per (row, piece)
// task, blocks of up to kBlockRows valid tokens are gathered and dequantised ONCE (exact bf16 via
// the VBMI tables of cpu/fp8_convert_avx512.h, widened to fp32 by a shift) and shared by all
// heads (MQA). Layouts: Q^T fp32 [head_dim][hp] (hp = heads rounded up to 16, pad heads zero),
// K fp32 [rows][head_dim] (V = K[:, 0:512]), scores/P [rows][hp] fp32, O fp32 [hp][512].
// QK: S[n][h] = sum_d K[n][d] * Q^T[d][h], 4-8 rows x 1-4 head vectors of FMA accumulators with
// broadcast K. Softmax: lazy online update in base 2 (cpu/softmax_avx512.h), P kept in fp32.
// PV: O[h][v] += sum_n P[n][h] * V[n][v], 1-4 heads x 64-128 columns of accumulators.
// Invariants: invalid slots are never read (compacted away); pad rows are zero with P = 0;
// piece boundaries depend only on the request's shape, so results are thread-count invariant.
// Uses fp32 FMA rather than VDPBF16PS (half the FMA rate on this core class).
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/fp8_convert_avx512.h"
#include "cpu/softmax_avx512.h"
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

template <int R, int J>
inline void qk_block(const float* kf, int64_t d_qk, const float* qt, int64_t hp, float* st) {
  __m512 acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t d = 0; d < d_qk; ++d) {
    __m512 qv[J];
    for (int j = 0; j < J; ++j) qv[j] = _mm512_loadu_ps(qt + d * hp + 16 * j);
    for (int r = 0; r < R; ++r) {
      const __m512 k = _mm512_set1_ps(kf[r * d_qk + d]);
      for (int j = 0; j < J; ++j) acc[r][j] = _mm512_fmadd_ps(k, qv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) _mm512_storeu_ps(st + r * hp + 16 * j, acc[r][j]);
}

template <int R>
void qk_rows(const float* kf, int64_t d_qk, const float* qt, int64_t hp, float* st) {
  const int64_t hv = hp / 16;
  for (int64_t j = 0; j < hv; j += 4) {
    const float* q = qt + 16 * j;
    float* s = st + 16 * j;
    switch (std::min<int64_t>(4, hv - j)) {
      case 1: qk_block<R, 1>(kf, d_qk, q, hp, s); break;
      case 2: qk_block<R, 2>(kf, d_qk, q, hp, s); break;
      case 3: qk_block<R, 3>(kf, d_qk, q, hp, s); break;
      default: qk_block<R, 4>(kf, d_qk, q, hp, s); break;
    }
  }
}

template <int H, int VB>
inline void pv_block(const float* pt, int64_t hp, const float* kf, int64_t d_qk, int64_t n,
                     float* acc) {
  __m512 o[H][VB];
  for (int h = 0; h < H; ++h)
    for (int v = 0; v < VB; ++v) o[h][v] = _mm512_load_ps(acc + h * kDimV + 16 * v);
  for (int64_t t = 0; t < n; ++t) {
    __m512 vv[VB];
    for (int v = 0; v < VB; ++v) vv[v] = _mm512_loadu_ps(kf + t * d_qk + 16 * v);
    for (int h = 0; h < H; ++h) {
      const __m512 p = _mm512_set1_ps(pt[t * hp + h]);
      for (int v = 0; v < VB; ++v) o[h][v] = _mm512_fmadd_ps(p, vv[v], o[h][v]);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int v = 0; v < VB; ++v) _mm512_store_ps(acc + h * kDimV + 16 * v, o[h][v]);
}

void pv(const float* pt, int64_t hp, int64_t heads, const float* kf, int64_t d_qk, int64_t n,
        float* acc) {
  for (int64_t h = 0; h < heads; h += 4) {
    const int64_t hn = std::min<int64_t>(4, heads - h);
    if (hn == 1) {
      for (int64_t v = 0; v < kDimV; v += 128)
        pv_block<1, 8>(pt + h, hp, kf + v, d_qk, n, acc + h * kDimV + v);
      continue;
    }
    for (int64_t v = 0; v < kDimV; v += 64) {
      switch (hn) {
        case 2: pv_block<2, 4>(pt + h, hp, kf + v, d_qk, n, acc + h * kDimV + v); break;
        case 3: pv_block<3, 4>(pt + h, hp, kf + v, d_qk, n, acc + h * kDimV + v); break;
        default: pv_block<4, 4>(pt + h, hp, kf + v, d_qk, n, acc + h * kDimV + v); break;
      }
    }
  }
}

void run_piece(const SparseDecodeParams& p, const PieceTask& t, const PieceOutput& out) {
  static thread_local Workspace ws;
  const int64_t d_qk = p.head_dim, heads = t.h_end - t.h_begin;
  const int64_t hp = (heads + 15) / 16 * 16;
  const int64_t row_align = hp == 16 ? 8 : 4;
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
  const E4M3Lut lut = load_e4m3_lut();
  const KvFormat format = p.kv.format;
  const float c = p.softmax_scale * kLog2e;
  SlotCursor cursor(p, t.b, t.s, t.begin, t.end);
  for (;;) {
    const int64_t n = cursor.next(refs, kBlockRows);
    if (n == 0) break;
    for (int64_t t = 0; t < n; ++t) {
      if (t + 4 < n) {
        for (int64_t off = 0; off < 640; off += 64) _mm_prefetch(reinterpret_cast<const char*>(refs[t + 4].rec) + off, _MM_HINT_T0);
      }
      dequant_token_avx512(lut, format, d_qk, refs[t].rec, refs[t].scales, kb);
      float* row = kf + t * d_qk;
      for (int64_t d = 0; d < d_qk; d += 16) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kb + d));
        _mm512_storeu_ps(row + d, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(w), 16)));
      }
    }
    const int64_t n_pad = (n + row_align - 1) / row_align * row_align;
    std::memset(kf + n * d_qk, 0, sizeof(float) * (n_pad - n) * d_qk);
    for (int64_t r = 0; r < n_pad; r += row_align) {
      if (row_align == 8) qk_rows<8>(kf + r * d_qk, d_qk, qt, hp, st + r * hp);
      else qk_rows<4>(kf + r * d_qk, d_qk, qt, hp, st + r * hp);
    }
    if (softmax_block_avx512(st, n, n_pad, hp, c, m, l, alpha)) {
      for (int64_t h = 0; h < heads; ++h) {
        if (alpha[h] == 1.0f) continue;
        const __m512 a = _mm512_set1_ps(alpha[h]);
        for (int64_t v = 0; v < kDimV; v += 16)
          _mm512_store_ps(acc + h * kDimV + v, _mm512_mul_ps(a, _mm512_load_ps(acc + h * kDimV + v)));
      }
    }
    pv(st, hp, heads, kf, d_qk, n, acc);
  }
  finish_piece_state(t, m, l, acc, kDimV, out);
}

Status avx512_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const SparseDecodeParams*>(params);
  return run_split_tasks(p, config,
                         [&](const PieceTask& t, const PieceOutput& out) { run_piece(p, t, out); });
}

}  // namespace

const KernelEntry kSparseDecodeAvx512 = {"sparse_decode.avx512", Op::kSparseDecode, Isa::kAvx512,
                                         sd_unsupported, sd_choose_splits, avx512_run};

}  // namespace openmla
