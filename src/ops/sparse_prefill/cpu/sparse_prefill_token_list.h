// The sparse-prefill item on the token-list attention (cpu/token_list_attention.h), shared by
// sparse_prefill.amx (>= 64 heads per kv head) and sparse_prefill.avx512bf16 (every shape): the
// valid slots of a (query token, kv head) item, in order, are the token list, all query heads of
// the kv head the query; the unscaled score max per head is tracked for max_logits.
// Invariants: invalid / past-length slots are never read (the caller compacts them away);
// outputs depend only on the item's own inputs (thread-count invariant).
// Everything has internal linkage: this header is compiled under different ISA flags.
#pragma once

#include <cstdint>
#include <limits>

#include "cpu/aligned_buffer.h"
#include "cpu/token_list_attention.h"
#include "ops/sparse_prefill/cpu/sparse_prefill_cpu.h"

namespace openmla {
namespace {

/// kv rows valid[0, count) of kv head g, in order.
class SlotRows final : public TokenSource {
 public:
  SlotRows(const SparsePrefillParams& p, int64_t g, const int32_t* valid, int64_t count)
      : p_(p), kv_(p.kv + g * p.kv_stride[1]), valid_(valid), count_(count) {}
  int64_t next(TokenRef* refs, int64_t max) override {
    int64_t n = 0;
    for (; n < max && next_ < count_; ++n, ++next_) {
      refs[n].rec = reinterpret_cast<const uint8_t*>(kv_ + valid_[next_] * p_.kv_stride[0]);
      refs[n].scales = nullptr;
    }
    return n;
  }

 private:
  const SparsePrefillParams& p_;
  const uint16_t* kv_;
  const int32_t* valid_;
  int64_t count_, next_ = 0;
};

/// Head hh of the item -> head g * group + hh of token s.
class TokenHeads final : public HeadSink {
 public:
  TokenHeads(const SparsePrefillParams& p, int64_t s, int64_t h0, const float* raw_max)
      : p_(p), s_(s), h0_(h0), raw_max_(raw_max) {}
  void emit(int64_t hh, const float* o, float lse) override {
    const float max_logit =
        lse == -std::numeric_limits<float>::infinity() ? lse : raw_max_[hh] * p_.softmax_scale;
    sp_emit_head(p_, s_, h0_ + hh, o, lse, max_logit);
  }

 private:
  const SparsePrefillParams& p_;
  int64_t s_, h0_;
  const float* raw_max_;
};

inline void token_list_item(const SparsePrefillParams& p, int64_t s, int64_t g,
                            const int32_t* valid, int64_t count, AttendTokenList attend) {
  const int64_t group = p.heads_q / p.heads_kv;
  static thread_local AlignedBuffer<float> raw_max_buf;
  TokenListQuery query;
  query.q = p.q + s * p.q_stride[0] + g * group * p.q_stride[1];
  query.head_stride = p.q_stride[1];
  query.heads = group;
  query.head_dim = p.head_dim;
  query.format = KvFormat::kBF16;
  query.softmax_scale = p.softmax_scale;
  query.raw_max = raw_max_buf.get(group);
  SlotRows rows(p, g, valid, count);
  TokenHeads heads(p, s, g * group, query.raw_max);
  attend(query, rows, heads);
}

}  // namespace
}  // namespace openmla
