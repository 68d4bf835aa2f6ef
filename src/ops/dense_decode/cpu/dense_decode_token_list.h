// The dense-decode item on the token-list attention (cpu/token_list_attention.h), shared by
// dense_decode.amx (one query token, >= 64 heads per kv head) and dense_decode.avx512bf16 (every
// bf16 shape): each query token s of the item attends, with all heads of the kv head as the
// query, to the piece's tokens below its visible length, in cache order (a dense piece is a
// sparse list that happens to be consecutive); with seq_q > 1 the piece is gathered once per
// query token.
// Invariants: keys at or past a row's visible length never reach it; the result depends only on
// the item (thread-count / batch invariant).
// Everything has internal linkage: this header is compiled under different ISA flags.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/token_list_attention.h"
#include "ops/dense_decode/cpu/dense_decode_cpu.h"

namespace openmla {
namespace {

/// Tokens [next, stop) of request b, kv head g, in cache order.
class PieceTokens final : public TokenSource {
 public:
  PieceTokens(const DenseDecodeParams& p, int64_t b, int64_t g, int64_t begin, int64_t stop)
      : p_(p), b_(b), g_(g), next_(begin), stop_(stop) {}
  int64_t next(TokenRef* refs, int64_t max) override {
    const int64_t n = std::min(max, stop_ - next_);
    for_each_request_token(p_, b_, g_, next_, n,
                           [&](int64_t i, const uint8_t* rec, const uint8_t* scales) {
                             refs[i] = {rec, scales};
                           });
    next_ += n;
    return n;
  }

 private:
  const DenseDecodeParams& p_;
  int64_t b_, g_, next_, stop_;
};

/// Head h of query token s of the item -> its partial row s * group + h.
class ItemRows final : public HeadSink {
 public:
  ItemRows(const DdItem& it, int64_t first_row) : it_(it), first_row_(first_row) {}
  void emit(int64_t h, const float* o, float lse) override {
    std::memcpy(it_.o_part + (first_row_ + h) * kRowsDimV, o, kRowsDimV * sizeof(float));
    it_.lse_part[first_row_ + h] = lse;
  }

 private:
  const DdItem& it_;
  int64_t first_row_;
};

/// Runs every query token of the item through `attend`.
inline void token_list_item(const DenseDecodeParams& p, const DdItem& it, AttendTokenList attend) {
  const int64_t group = p.heads_q / p.heads_kv;
  for (int64_t s = 0; s < p.seq_q; ++s) {
    TokenListQuery query;
    query.q = p.q + it.b * p.q_stride[0] + s * p.q_stride[1] + it.g * group * p.q_stride[2];
    query.head_stride = p.q_stride[2];
    query.heads = group;
    query.head_dim = p.head_dim;
    query.format = p.kv.format;
    query.softmax_scale = p.softmax_scale;
    const int64_t stop = std::max(it.begin, std::min(it.end, p.visible_length(it.b, s)));
    PieceTokens tokens(p, it.b, it.g, it.begin, stop);
    ItemRows rows(it, s * group);
    attend(query, tokens, rows);
  }
}

}  // namespace
}  // namespace openmla
