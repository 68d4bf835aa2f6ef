// Attention of one query token's heads over a list of cache tokens, on AMX or AVX512-BF16: one
// engine (cpu/token_list_core.h) with the GEMMs of token_list_attention_amx.cpp or
// token_list_attention_avx512bf16.cpp; call each only when its ISA's kernels may run. The
// sparse-decode kernels of both ISAs run every (row, piece, head group) through it with the row's
// selected slots; the dense-decode kernels run pieces through it with the piece's tokens in cache
// order (a dense piece is a sparse list that happens to be consecutive; AMX: one query token with
// >= 64 heads per kv head, AVX512-BF16: every bf16 shape); the sparse-prefill kernels run each
// (query token, kv head) item through it (AMX: >= 64 heads, AVX512-BF16: all).
// ISA-free: includable from any file.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "openmla/core.h"

namespace openmla {

/// Query heads per kv head from which the AMX dense-decode and sparse-prefill kernels use this core
/// rather than the attention-rows engine (measured faster from 64 heads, slower at 16).
constexpr int64_t kTokenListMinHeads = 64;

/// One cache token: its record (V32 / MODEL1 / 16-bit words) and, for MODEL1, its scale record.
struct TokenRef {
  const uint8_t* rec;
  const uint8_t* scales;  ///< MODEL1 scale record, else unused
};

/// The query: `heads` rows of head_dim bf16 values, head_stride elements apart.
struct TokenListQuery {
  const uint16_t* q = nullptr;
  int64_t head_stride = 0, heads = 0, head_dim = 0;
  KvFormat format = KvFormat::kBF16;  ///< of every record
  float softmax_scale = 0.0f;
  float* raw_max = nullptr;  ///< optional [heads]: the largest unscaled score q.k (-inf: none)
};

/// Hands out the token list in order, a block at a time.
class TokenSource {
 public:
  virtual ~TokenSource() = default;
  /// Fills up to `max` refs with the next tokens; returns how many (0: the list is done).
  virtual int64_t next(TokenRef* refs, int64_t max) = 0;
};

/// Receives each head's result once.
class HeadSink {
 public:
  virtual ~HeadSink() = default;
  /// Head h of the query: `o` = 512 normalised floats (zeros when no token), `lse` natural log
  /// (-inf when no token).
  virtual void emit(int64_t h, const float* o, float lse) = 0;
};

/// Normalises the running state of `heads` heads (m in log2 units, l, accumulator rows of 512
/// floats `acc_stride` apart) and calls emit(i, o, lse) for each: o = acc / l, lse = (m + log2 l)
/// * ln 2 in natural log; a head with l = 0 gets zeros and -inf.
template <class Emit>
void finish_heads(int64_t heads, const float* m, const float* l, const float* acc,
                  int64_t acc_stride, Emit&& emit) {
  constexpr double kLn2 = 0.6931471805599453;
  alignas(64) float row[512];
  for (int64_t i = 0; i < heads; ++i) {
    if (!(l[i] > 0.0f)) {
      std::memset(row, 0, sizeof(row));
      emit(i, static_cast<const float*>(row), -std::numeric_limits<float>::infinity());
      continue;
    }
    const float inv = 1.0f / l[i];
    const float* __restrict a = acc + i * acc_stride;
    for (int64_t v = 0; v < 512; ++v) row[v] = a[v] * inv;
    emit(i, static_cast<const float*>(row),
         static_cast<float>((static_cast<double>(m[i]) + std::log2(static_cast<double>(l[i]))) *
                            kLn2));
  }
}

/// Online-softmax attention of query's heads over source's tokens (V = first 512 dims), each
/// token gathered and dequantised once for all heads. Deterministic: the result depends only on
/// the query, the token list and its order.
void amx_attend_token_list(const TokenListQuery& query, TokenSource& source, HeadSink& sink);

/// The same attention with AVX512-BF16 dot products (call only when the avx512bf16 kernels may
/// run); the same layouts and softmax, so it differs from the AMX result only by the order in
/// which the dot products' pairs are summed.
void bf16_attend_token_list(const TokenListQuery& query, TokenSource& source, HeadSink& sink);

/// Either of the two, for drivers written once for both.
using AttendTokenList = void (*)(const TokenListQuery&, TokenSource&, HeadSink&);

}  // namespace openmla
