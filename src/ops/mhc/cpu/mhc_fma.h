// mHC fast kernels (hc_pre, hc_head, hc_post), written once over the width-generic fp32 vector
// layer (cpu/fma_vec.h) and instantiated by mhc_avx2.cpp (8 lanes) and mhc_avx512.cpp (16 lanes).
//
// Mix (hc_pre / hc_head): mix[t, r] = fn[r] . vec(X_t), the projection of the flattened streams.
// Layout: X [tokens, hc, hidden] bf16 (hidden contiguous, any token / stream strides), fn
// [rows, hc * hidden] fp32. Tiling: the reduction runs stream by stream in blocks of kMixBlock
// columns; a micro-tile keeps TOK tokens x ROWS rows of vector accumulators (hc_pre: 2 x kMixRows,
// 12 of 16 registers with AVX2, 24 of 32 with AVX-512; hc_head, with hc = 4 rows only: 4 x 4),
// loading each fn vector once per TOK tokens and each token vector once per row group; a lone
// token (decode) takes a 1-token tile rather than computing a clamped copy of itself. Between
// blocks a tile's accumulators go to a per-(token, row) vector of partial sums (lane l holds the
// columns = l mod lanes, summed in column order), reduced once (fv_hsum) after the last block;
// a block's scalar tail columns go to the fp32 row sum. So every (token, row) sees the same
// operations in the same order whatever the tiling, the token's neighbours or the thread count:
// bitwise thread- and batch-invariant.
// Work: tasks are (chunk of kMixChunk tokens, range of row groups); with enough chunks a task
// takes all rows and then finishes its tokens (rsqrt, gates, Sinkhorn, y) while they are in cache;
// otherwise (decode) the row groups are spread over the threads and a second pass finishes.
// Post: out_k = post_k f + sum_j comb_jk X_j per kPostBlock columns, one task per (token, block);
// for hc = 4 (V4) every input vector is widened once for the 4 outputs.
#pragma once

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "cpu/fma_vec_ops.h"
#include "ops/mhc/mhc.h"

namespace openmla {
namespace {

constexpr int kMixTok = 2;
constexpr int kMixRows = 3 * kQkVecs;  // 6 (AVX2) or 12 (AVX-512): 2 x rows accumulators + 3
// hc_head projects onto hc (4 in V4) rows only: a 4-row tile, so that no row computed is
// dropped, and 4 tokens per tile (16 accumulators) to load each fn vector once per 4 tokens.
constexpr int kHeadRows = 4;
constexpr int kHeadTok = 4;
// A lone token reads fn once, from L3 or memory: rows 64 KiB apart at V4-Flash sizes all map
// to one L1 set, so it takes kQkVecs rows at a time (4 with AVX-512, 2 with AVX2: a divisor of
// both tiles' row counts) instead of a whole row group.
constexpr int kLoneRows = kQkVecs;
static_assert(kMixRows % kLoneRows == 0 && kHeadRows % kLoneRows == 0, "lone tiles split groups");
// Why 256: one block of 24 fn rows (V4's hc_pre) is 24 KiB of fp32, which stays in the 32 KiB L1d
// while every token pair of the chunk streams past it.
constexpr int64_t kMixBlock = 256;
// Why 16: a chunk's streams (16 x 4 x 4096 bf16 = 512 KiB at V4-Flash) are still in L2/L3 when
// the task finishes the chunk's tokens right after their projection.
constexpr int64_t kMixChunk = 16;
constexpr int64_t kPostBlock = 1024;  // columns per hc_post task: 2 KiB per stream, L1-resident

/// Adds the projection of columns [c0, c0 + len) of stream j, for `nt` <= TOK tokens starting at
/// t0 and the ROWS rows starting at r0 (rows past p.rows and tokens past nt are computed on a
/// clamped row / token and dropped), to the partial-sum vectors vacc[((t - t0) * rows + r) *
/// lanes ..] (the first block, j = c0 = 0, starts them) and its tail columns to
/// mix[(t - t0) * rows + r]. Row r0 + r of the block is at f + r * f_stride (fn itself, or a
/// packed copy).
template <int ROWS, int TOK>
void mix_block(const MhcMixParams& p, int64_t t0, int nt, int64_t r0, int64_t j, int64_t c0,
               int64_t len, const float* f, int64_t f_stride, float* mix, float* vacc) {
  const uint16_t* xs[TOK];
  for (int t = 0; t < TOK; ++t)
    xs[t] = p.x + (t0 + std::min(t, nt - 1)) * p.x_stride[0] + j * p.x_stride[1] + c0;
  const int64_t valid_rows = std::min<int64_t>(ROWS, p.rows - r0);
  const float* fs[ROWS];
  for (int r = 0; r < ROWS; ++r) fs[r] = f + std::min<int64_t>(r, valid_rows - 1) * f_stride;
  auto partial = [&](int t, int r) { return vacc + (t * p.rows + r0 + r) * kFmaLanes; };
  const bool first = j == 0 && c0 == 0;
  FmaVec acc[TOK][ROWS];
  for (int t = 0; t < TOK; ++t)
    for (int r = 0; r < ROWS; ++r)
      acc[t][r] = first || t >= nt || r >= valid_rows ? fv_zero() : fv_load(partial(t, r));
  const int64_t vec_end = len - len % kFmaLanes;
  for (int64_t c = 0; c < vec_end; c += kFmaLanes) {
    FmaVec xv[TOK];
    for (int t = 0; t < TOK; ++t) xv[t] = fv_load_bf16(xs[t] + c);
    for (int r = 0; r < ROWS; ++r) {
      const FmaVec f = fv_load(fs[r] + c);
      for (int t = 0; t < TOK; ++t) acc[t][r] = fv_fma(f, xv[t], acc[t][r]);
    }
  }
  for (int t = 0; t < TOK; ++t)  // constant indices: acc stays in registers
    for (int r = 0; r < ROWS; ++r)
      if (t < nt && r < valid_rows) fv_store(partial(t, r), acc[t][r]);
  if (vec_end == len) return;
  for (int t = 0; t < nt; ++t) {
    for (int r = 0; r < valid_rows; ++r) {
      float tail = 0.0f;
      for (int64_t c = vec_end; c < len; ++c)
        tail = std::fma(fs[r][c], bf16_to_float(xs[t][c]), tail);
      mix[t * p.rows + r0 + r] += tail;
    }
  }
}

/// Token t's row sums: the tails already in mix_row plus the reduced partial-sum vectors.
inline void reduce_partials(const MhcMixParams& p, float* mix_row, const float* vacc_row) {
  for (int64_t r = 0; r < p.rows; ++r) mix_row[r] += fv_hsum(fv_load(vacc_row + r * kFmaLanes));
}

/// Copies rows [r0, r0 + ROWS) (clamped to p.rows) of stream j, columns [c0, c0 + len), into
/// buf [ROWS][kMixBlock]: fn rows lie hc * hidden floats apart (64 KiB at V4-Flash), so a block
/// read in place maps all its rows onto the same L1 sets and falls out of L1 between token tiles.
template <int ROWS>
void pack_fn_block(const MhcMixParams& p, int64_t r0, int64_t j, int64_t c0, int64_t len,
                   float* buf) {
  const int64_t r1 = std::min<int64_t>(r0 + ROWS, p.rows);
  for (int64_t r = r0; r < r1; ++r)
    std::copy_n(p.fn + r * p.fn_stride + j * p.hidden + c0, len, buf + (r - r0) * kMixBlock);
}

/// mix rows of row groups [g0, g1) (ROWS rows each) for tokens [t0, t1) in tiles of TOK tokens
/// (a lone token: 1-token tiles of kLoneRows rows, straight from fn); mix and vacc point at
/// token t0's row sums and partial-sum vectors.
template <int ROWS, int TOK>
void mix_tokens(const MhcMixParams& p, int64_t t0, int64_t t1, int64_t g0, int64_t g1, float* mix,
                float* vacc) {
  // A block is re-read by each token tile, from a packed copy; with one tile there is nothing to
  // reuse, and whole streams save the per-block set-up (the sums are the same for any block).
  const bool tiled = t1 - t0 > TOK;
  const int64_t block = tiled ? kMixBlock : p.hidden;
  alignas(64) float packed[ROWS * kMixBlock];
  for (int64_t j = 0; j < p.hc; ++j) {
    for (int64_t c0 = 0; c0 < p.hidden; c0 += block) {
      const int64_t len = std::min(block, p.hidden - c0);
      for (int64_t g = g0; g < g1; ++g) {
        const float* f = p.fn + g * ROWS * p.fn_stride + j * p.hidden + c0;
        int64_t f_stride = p.fn_stride;
        if (tiled) {
          pack_fn_block<ROWS>(p, g * ROWS, j, c0, len, packed);
          f = packed;
          f_stride = kMixBlock;
        }
        for (int64_t t = t0; t < t1; t += TOK) {
          const int nt = static_cast<int>(std::min<int64_t>(TOK, t1 - t));
          float* m = mix + (t - t0) * p.rows;
          float* v = vacc + (t - t0) * p.rows * kFmaLanes;
          if (nt > 1) {
            mix_block<ROWS, TOK>(p, t, nt, g * ROWS, j, c0, len, f, f_stride, m, v);
            continue;
          }
          const int64_t r1 = std::min<int64_t>((g + 1) * ROWS, p.rows);
          for (int64_t r = g * ROWS; r < r1; r += kLoneRows) {
            mix_block<kLoneRows, 1>(p, t, 1, r, j, c0, len, f + (r - g * ROWS) * f_stride, f_stride,
                                    m, v);
          }
        }
      }
    }
  }
}

/// Sum of squares of token t's streams, in the same blocked order for every token.
inline float token_sumsq(const MhcMixParams& p, int64_t t) {
  float total = 0.0f;
  for (int64_t j = 0; j < p.hc; ++j) {
    const uint16_t* x = p.x + t * p.x_stride[0] + j * p.x_stride[1];
    FmaVec acc = fv_zero();
    const int64_t vec_end = p.hidden - p.hidden % kFmaLanes;
    for (int64_t c = 0; c < vec_end; c += kFmaLanes) {
      const FmaVec v = fv_load_bf16(x + c);
      acc = fv_fma(v, v, acc);
    }
    float tail = 0.0f;
    for (int64_t c = vec_end; c < p.hidden; ++c)
      tail = std::fma(bf16_to_float(x[c]), bf16_to_float(x[c]), tail);
    total += fv_hsum(acc) + tail;
  }
  return total;
}

/// y_t = sum_j pre_j X_j, rounded to bf16.
inline void weighted_sum(const MhcMixParams& p, int64_t t, const float* pre) {
  const uint16_t* x = p.x + t * p.x_stride[0];
  uint16_t* y = p.y + t * p.y_stride;
  const int64_t vec_end = p.hidden - p.hidden % kFmaLanes;
  for (int64_t c = 0; c < vec_end; c += kFmaLanes) {
    FmaVec acc = fv_mul(fv_set1(pre[0]), fv_load_bf16(x + c));
    for (int64_t j = 1; j < p.hc; ++j)
      acc = fv_fma(fv_set1(pre[j]), fv_load_bf16(x + j * p.x_stride[1] + c), acc);
    fv_store_bf16(y + c, acc);
  }
  for (int64_t c = vec_end; c < p.hidden; ++c) {
    float acc = pre[0] * bf16_to_float(x[c]);
    for (int64_t j = 1; j < p.hc; ++j)
      acc = std::fma(pre[j], bf16_to_float(x[j * p.x_stride[1] + c]), acc);
    y[c] = float_to_bf16(acc);
  }
}

/// rsqrt, gates and Sinkhorn for token t from its raw projection; writes y, post and comb.
inline void finish_token(const MhcMixParams& p, int64_t t, const float* raw_mix) {
  const float r =
      1.0f / std::sqrt(token_sumsq(p, t) / static_cast<float>(p.hc * p.hidden) + p.rms_eps);
  float mix[(2 + kMhcMaxStreams) * kMhcMaxStreams];
  for (int64_t i = 0; i < p.rows; ++i) mix[i] = raw_mix[i] * r;
  float pre[kMhcMaxStreams], post[kMhcMaxStreams], comb[kMhcMaxStreams * kMhcMaxStreams];
  mhc_gates_f32(p, mix, pre, post, comb);
  weighted_sum(p, t, pre);
  if (p.head) return;
  for (int64_t j = 0; j < p.hc; ++j) {
    p.post[t * p.post_stride[0] + j * p.post_stride[1]] = post[j];
    for (int64_t k = 0; k < p.hc; ++k)
      p.comb[t * p.comb_stride[0] + j * p.comb_stride[1] + k * p.comb_stride[2]] =
          comb[j * p.hc + k];
  }
}

const char* mhc_fma_unsupported(const void*) { return nullptr; }

template <int ROWS, int TOK>
void mix_and_finish(const MhcMixParams& p, const ExecConfig& config) {
  std::vector<float> mix(p.tokens * p.rows, 0.0f);
  std::vector<float> vacc(p.tokens * p.rows * kFmaLanes);  // every entry written before read
  const int64_t chunks = (p.tokens + kMixChunk - 1) / kMixChunk;
  const int64_t groups = (p.rows + ROWS - 1) / ROWS;
  auto chunk_end = [&](int64_t c) { return std::min(p.tokens, (c + 1) * kMixChunk); };
  auto finish = [&](int64_t t) {
    reduce_partials(p, mix.data() + t * p.rows, vacc.data() + t * p.rows * kFmaLanes);
    finish_token(p, t, mix.data() + t * p.rows);
  };
  auto at = [&](int64_t t0) {
    return std::make_pair(mix.data() + t0 * p.rows, vacc.data() + t0 * p.rows * kFmaLanes);
  };
  if (chunks >= config.num_threads) {
    parallel_for(chunks, config.num_threads, [&](int64_t c, int) {
      const int64_t t0 = c * kMixChunk;
      mix_tokens<ROWS, TOK>(p, t0, chunk_end(c), 0, groups, at(t0).first, at(t0).second);
      for (int64_t t = t0; t < chunk_end(c); ++t) finish(t);
    });
    return;
  }
  parallel_for(chunks * groups, config.num_threads, [&](int64_t task, int) {
    const int64_t c = task / groups, g = task % groups, t0 = c * kMixChunk;
    mix_tokens<ROWS, TOK>(p, t0, chunk_end(c), g, g + 1, at(t0).first, at(t0).second);
  });
  parallel_for(p.tokens, config.num_threads, [&](int64_t t, int) { finish(t); });
}

Status mhc_mix_fma_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const MhcMixParams*>(params);
  if (p.head)
    mix_and_finish<kHeadRows, kHeadTok>(p, config);
  else
    mix_and_finish<kMixRows, kMixTok>(p, config);
  return Status::Ok();
}

/// hc_post for token t, columns [c0, c0 + len).
inline void post_block(const MhcPostParams& p, int64_t t, int64_t c0, int64_t len) {
  const uint16_t* f = p.x + t * p.x_stride + c0;
  const uint16_t* res = p.residual + t * p.residual_stride[0] + c0;
  const float* comb = p.comb + t * p.comb_stride[0];
  const int64_t vec_end = len - len % kFmaLanes;
  for (int64_t k = 0; k < p.hc; ++k) {
    const float post = p.post[t * p.post_stride[0] + k * p.post_stride[1]];
    float w[kMhcMaxStreams];
    for (int64_t j = 0; j < p.hc; ++j) w[j] = comb[j * p.comb_stride[1] + k * p.comb_stride[2]];
    uint16_t* out = p.out + t * p.out_stride[0] + k * p.out_stride[1] + c0;
    for (int64_t c = 0; c < vec_end; c += kFmaLanes) {
      FmaVec acc = fv_mul(fv_set1(post), fv_load_bf16(f + c));
      for (int64_t j = 0; j < p.hc; ++j)
        acc = fv_fma(fv_set1(w[j]), fv_load_bf16(res + j * p.residual_stride[1] + c), acc);
      fv_store_bf16(out + c, acc);
    }
    for (int64_t c = vec_end; c < len; ++c) {
      float acc = post * bf16_to_float(f[c]);
      for (int64_t j = 0; j < p.hc; ++j)
        acc = std::fma(w[j], bf16_to_float(res[j * p.residual_stride[1] + c]), acc);
      out[c] = float_to_bf16(acc);
    }
  }
}

/// post_block for a compile-time stream count: each column vector of f and of the HC streams is
/// loaded and widened once and feeds all HC outputs (the generic version reloads them per output).
/// Same operations per output element as post_block, so both give the same bits.
template <int HC>
void post_block_fixed(const MhcPostParams& p, int64_t t, int64_t c0, int64_t len) {
  const uint16_t* f = p.x + t * p.x_stride + c0;
  const uint16_t* res = p.residual + t * p.residual_stride[0] + c0;
  const float* comb = p.comb + t * p.comb_stride[0];
  float post[HC], w[HC][HC];  // w[k][j] = comb[j, k]
  for (int k = 0; k < HC; ++k) {
    post[k] = p.post[t * p.post_stride[0] + k * p.post_stride[1]];
    for (int j = 0; j < HC; ++j) w[k][j] = comb[j * p.comb_stride[1] + k * p.comb_stride[2]];
  }
  uint16_t* out[HC];
  for (int k = 0; k < HC; ++k) out[k] = p.out + t * p.out_stride[0] + k * p.out_stride[1] + c0;
  const int64_t vec_end = len - len % kFmaLanes;
  for (int64_t c = 0; c < vec_end; c += kFmaLanes) {
    const FmaVec fv = fv_load_bf16(f + c);
    FmaVec xv[HC];
    for (int j = 0; j < HC; ++j) xv[j] = fv_load_bf16(res + j * p.residual_stride[1] + c);
    for (int k = 0; k < HC; ++k) {
      FmaVec acc = fv_mul(fv_set1(post[k]), fv);
      for (int j = 0; j < HC; ++j) acc = fv_fma(fv_set1(w[k][j]), xv[j], acc);
      fv_store_bf16(out[k] + c, acc);
    }
  }
  if (vec_end < len) post_block(p, t, c0 + vec_end, len - vec_end);
}

Status mhc_post_fma_run(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const MhcPostParams*>(params);
  const int64_t blocks = (p.hidden + kPostBlock - 1) / kPostBlock;
  parallel_for(p.tokens * blocks, config.num_threads, [&](int64_t task, int) {
    const int64_t t = task / blocks, c0 = (task % blocks) * kPostBlock;
    const int64_t len = std::min(kPostBlock, p.hidden - c0);
    if (p.hc == 4)
      post_block_fixed<4>(p, t, c0, len);
    else
      post_block(p, t, c0, len);
  });
  return Status::Ok();
}

}  // namespace
}  // namespace openmla
