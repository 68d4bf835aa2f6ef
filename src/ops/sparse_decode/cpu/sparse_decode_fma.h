// Sparse decode, fp32-FMA kernel for CPUs without AMX, written once against the width-generic
// vector layer of cpu/fma_vec.h (include only from sparse_decode_avx512.cpp, 16 lanes, or
// sparse_decode_avx2.cpp, 8 lanes; each defines its KernelEntry on sparse_decode_fma_run).
// Algorithm: split plan + compaction of valid slots from sparse_decode_cpu.h; per (row, piece)
// task, blocks of up to kBlockRows valid tokens are gathered and dequantised ONCE (exact bf16 via
// FmaTokenDequant: VBMI tables with AVX-512, portable tables with AVX2; widened to fp32 by a
// shift) and shared by all heads (MQA).
// Layouts: Q^T fp32 [head_dim][hp] (hp = heads rounded up to kFmaLanes, pad heads zero), K fp32
// [rows][head_dim] (V = K[:, 0:512]), scores / P [rows][hp] fp32, O fp32 [hp][512].
// QK: S[n][h] = sum_d K[n][d] * Q^T[d][h], 4-8 rows x 1-kQkVecs head vectors of FMA accumulators
// with broadcast K. Softmax: lazy online update in base 2 (cpu/softmax_avx512.h, or
// cpu/softmax_avx2.h), P kept in fp32. PV: O[h][v] += sum_n P[n][h] * V[n][v], tiles of
// 2-kPvHeads heads x 4 vectors (one head: 8 vectors) of accumulators.
// Invariants: invalid slots are never read (compacted away); pad rows are zero with P = 0; every
// output element is one FMA chain in token order whatever the tiling, so heads are independent
// lanes (results do not depend on head grouping); piece boundaries depend only on the request's
// shape, so results are thread-count invariant. fp32 FMA rather than VDPBF16PS (half the FMA
// rate on this core class).
// Everything has internal linkage: the header is compiled under different ISA flags.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu/fma_vec.h"
#include "ops/sparse_decode/cpu/sparse_decode_cpu.h"
#if defined(__AVX512F__)
#include "cpu/softmax_avx512.h"
#else
#include "cpu/softmax_avx2.h"
#endif

namespace openmla {
namespace {

constexpr int64_t kBlockRows = 64;
constexpr float kLog2e = 1.4426950408889634f;

#if defined(__AVX512F__)
constexpr int kPvHeads = 4;          // 4 heads x 4 vectors + 4 V vectors of 32 registers
constexpr int kPrefetchBytes = 640;  // record bytes prefetched 4 tokens ahead
inline bool sd_softmax_block(float* st, int64_t n_valid, int64_t n_pad, int64_t hp, float c,
                             float* m, float* l, float* alpha) {
  return softmax_block_avx512(st, n_valid, n_pad, hp, c, m, l, alpha);
}
#else
constexpr int kPvHeads = 2;  // 2 heads x 4 vectors + 4 V vectors of 16 registers
constexpr int kPrefetchBytes = 704;
inline bool sd_softmax_block(float* st, int64_t n_valid, int64_t n_pad, int64_t hp, float c,
                             float* m, float* l, float* alpha) {
  return softmax_block_avx2(st, n_valid, n_pad, hp, c, m, l, alpha);
}
#endif

struct Workspace {
  AlignedBuffer<float> qt, kf, st, acc, m, l, alpha;
  AlignedBuffer<uint16_t> kb;
  AlignedBuffer<TokenRef> refs;
};

// S[R rows][J vectors of heads] for rows kf[0, R) of stride d_qk.
template <int R, int J>
inline void qk_block(const float* kf, int64_t d_qk, const float* qt, int64_t hp, float* st) {
  FmaVec acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = fv_zero();
  for (int64_t d = 0; d < d_qk; ++d) {
    FmaVec qv[J];
    for (int j = 0; j < J; ++j) qv[j] = fv_load(qt + d * hp + kFmaLanes * j);
    for (int r = 0; r < R; ++r) {
      const FmaVec k = fv_set1(kf[r * d_qk + d]);
      for (int j = 0; j < J; ++j) acc[r][j] = fv_fma(k, qv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) fv_store(st + r * hp + kFmaLanes * j, acc[r][j]);
}

// S for R rows and all hp heads, kQkVecs head vectors at a time.
template <int R>
void qk_rows(const float* kf, int64_t d_qk, const float* qt, int64_t hp, float* st) {
  const int64_t hv = hp / kFmaLanes;
  for (int64_t j = 0; j < hv; j += kQkVecs) {
    const float* q = qt + kFmaLanes * j;
    float* s = st + kFmaLanes * j;
    switch (std::min<int64_t>(kQkVecs, hv - j)) {
      case 1:
        qk_block<R, 1>(kf, d_qk, q, hp, s);
        break;
      case 2:
        qk_block<R, 2>(kf, d_qk, q, hp, s);
        break;
      case 3:
        qk_block<R, 3>(kf, d_qk, q, hp, s);
        break;
      default:
        qk_block<R, kQkVecs>(kf, d_qk, q, hp, s);
        break;
    }
  }
}

// O[H heads][VB vectors of V columns] += sum_t P[t][h] * V[t][:] over n tokens.
template <int H, int VB>
inline void pv_block(const float* pt, int64_t hp, const float* kf, int64_t d_qk, int64_t n,
                     float* acc) {
  FmaVec o[H][VB];
  for (int h = 0; h < H; ++h)
    for (int v = 0; v < VB; ++v) o[h][v] = fv_load(acc + h * kDimV + kFmaLanes * v);
  for (int64_t t = 0; t < n; ++t) {
    FmaVec vv[VB];
    for (int v = 0; v < VB; ++v) vv[v] = fv_load(kf + t * d_qk + kFmaLanes * v);
    for (int h = 0; h < H; ++h) {
      const FmaVec p = fv_set1(pt[t * hp + h]);
      for (int v = 0; v < VB; ++v) o[h][v] = fv_fma(p, vv[v], o[h][v]);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int v = 0; v < VB; ++v) fv_store(acc + h * kDimV + kFmaLanes * v, o[h][v]);
}

// O += P V for heads [0, heads): groups of kPvHeads heads; a lone head takes twice the columns.
void pv(const float* pt, int64_t hp, int64_t heads, const float* kf, int64_t d_qk, int64_t n,
        float* acc) {
  for (int64_t h = 0; h < heads; h += kPvHeads) {
    const int64_t hn = std::min<int64_t>(kPvHeads, heads - h);
    const float* ph = pt + h;
    float* ah = acc + h * kDimV;
    if (hn == 1) {
      for (int64_t v = 0; v < kDimV; v += 8 * kFmaLanes)
        pv_block<1, 8>(ph, hp, kf + v, d_qk, n, ah + v);
      continue;
    }
    for (int64_t v = 0; v < kDimV; v += 4 * kFmaLanes) {
      switch (hn) {
        case 2:
          pv_block<2, 4>(ph, hp, kf + v, d_qk, n, ah + v);
          break;
        case 3:
          pv_block<3, 4>(ph, hp, kf + v, d_qk, n, ah + v);
          break;
        default:
          pv_block<kPvHeads, 4>(ph, hp, kf + v, d_qk, n, ah + v);
          break;
      }
    }
  }
}

// Q^T[d][h] = q(t.h_begin + h)[d] in fp32, pad heads [heads, hp) zero.
void load_q_transposed(const SparseDecodeParams& p, const PieceTask& t, int64_t hp, float* qt) {
  const int64_t d_qk = p.head_dim, heads = t.h_end - t.h_begin;
  const uint16_t* q = p.q + t.b * p.q_stride[0] + t.s * p.q_stride[1] + t.h_begin * p.q_stride[2];
  std::memset(qt, 0, sizeof(float) * d_qk * hp);
  for (int64_t h = 0; h < heads; ++h) {
    const uint16_t* qh = q + h * p.q_stride[2];
    for (int64_t d = 0; d < d_qk; ++d) qt[d * hp + h] = bf16_to_float(qh[d]);
  }
}

// Dequantises the n tokens of refs into fp32 rows kf [n][d_qk], prefetching 4 tokens ahead.
void gather_block(const FmaTokenDequant& dequant, KvFormat format, int64_t d_qk,
                  const TokenRef* refs, int64_t n, uint16_t* kb, float* kf) {
  for (int64_t t = 0; t < n; ++t) {
    if (t + 4 < n) {
      for (int off = 0; off < kPrefetchBytes; off += 64)
        _mm_prefetch(reinterpret_cast<const char*>(refs[t + 4].rec) + off, _MM_HINT_T0);
    }
    dequant(format, d_qk, refs[t].rec, refs[t].scales, kb);
    float* row = kf + t * d_qk;
    for (int64_t d = 0; d < d_qk; d += kFmaLanes) fv_store(row + d, fv_load_bf16(kb + d));
  }
}

// acc[h][:] *= alpha[h] for the heads whose running max moved.
void rescale_acc(const float* alpha, int64_t heads, float* acc) {
  for (int64_t h = 0; h < heads; ++h) {
    if (alpha[h] == 1.0f) continue;
    const FmaVec a = fv_set1(alpha[h]);
    float* ah = acc + h * kDimV;
    for (int64_t v = 0; v < kDimV; v += kFmaLanes) fv_store(ah + v, fv_mul(a, fv_load(ah + v)));
  }
}

void run_piece(const SparseDecodeParams& p, const PieceTask& t, const PieceOutput& out) {
  static thread_local Workspace ws;
  const int64_t d_qk = p.head_dim, heads = t.h_end - t.h_begin;
  const int64_t hp = (heads + kFmaLanes - 1) / kFmaLanes * kFmaLanes;
  const int64_t row_align = hp == kFmaLanes ? 8 : 4;
  float* qt = ws.qt.get(d_qk * hp);
  float* kf = ws.kf.get((kBlockRows + 8) * d_qk);
  float* st = ws.st.get((kBlockRows + 8) * hp);
  float* acc = ws.acc.get(hp * kDimV);
  float* m = ws.m.get(hp);
  float* l = ws.l.get(hp);
  float* alpha = ws.alpha.get(hp);
  uint16_t* kb = ws.kb.get(d_qk);
  TokenRef* refs = ws.refs.get(kBlockRows);

  load_q_transposed(p, t, hp, qt);
  std::memset(acc, 0, sizeof(float) * hp * kDimV);
  std::fill(m, m + hp, -std::numeric_limits<float>::infinity());
  std::fill(l, l + hp, 0.0f);
  const FmaTokenDequant dequant;
  const float c = p.softmax_scale * kLog2e;
  SlotCursor cursor(p, t.b, t.s, t.begin, t.end);
  for (;;) {
    const int64_t n = cursor.next(refs, kBlockRows);
    if (n == 0) break;
    gather_block(dequant, p.kv.format, d_qk, refs, n, kb, kf);
    const int64_t n_pad = (n + row_align - 1) / row_align * row_align;
    std::memset(kf + n * d_qk, 0, sizeof(float) * (n_pad - n) * d_qk);
    for (int64_t r = 0; r < n_pad; r += row_align) {
      if (row_align == 8) {
        qk_rows<8>(kf + r * d_qk, d_qk, qt, hp, st + r * hp);
      } else {
        qk_rows<4>(kf + r * d_qk, d_qk, qt, hp, st + r * hp);
      }
    }
    if (sd_softmax_block(st, n, n_pad, hp, c, m, l, alpha)) rescale_acc(alpha, heads, acc);
    pv(st, hp, heads, kf, d_qk, n, acc);
  }
  finish_piece_state(t, m, l, acc, kDimV, out);
}

Status sparse_decode_fma_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const SparseDecodeParams*>(params);
  return run_split_tasks(p, config,
                         [&](const PieceTask& t, const PieceOutput& out) { run_piece(p, t, out); });
}

}  // namespace
}  // namespace openmla
