// Sparse prefill, amx kernel ("sparse_prefill.amx").
// Algorithm: one work item per (query token, kv head) (sparse_prefill_cpu.h): the valid slots of
// its index row are compacted and attended by all query heads of the kv head at once, then the
// one combine applies the sink; max_logits from the raw scores. Two paths, chosen by the shape:
// - >= 64 query heads per kv head: the AMX token-list attention (cpu/token_list_attention_amx.cpp,
//   the core of sparse_decode.amx) with the slots as the list;
// - fewer: the attention-rows engine (cpu/attn_rows_engine.h, AMX backend, heads as M rows).
// Both: AMX-BF16 2x2-blocked tiles, QK with gathered kv rows as A and Q^T (VNNI) as B, PV with P
// (bf16) as A and V (VNNI) as B, fp32 O; online softmax in base 2.
// Invariants: invalid / past-length slots are never read; pad key rows are zero with P = 0;
// outputs depend only on the item's own inputs (thread-count invariant).
#include <limits>

#include "cpu/amx_attn_backend.h"
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

void token_list_item(const SparsePrefillParams& p, int64_t s, int64_t g, const int32_t* valid,
                     int64_t count) {
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
  amx_attend_token_list(query, rows, heads);
}

Status run_amx(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const SparsePrefillParams*>(params);
  if (p.heads_q / p.heads_kv >= kTokenListMinHeads) {
    return sp_run_items(p, config, [&](int64_t s, int64_t g, const int32_t* valid, int64_t n) {
      token_list_item(p, s, g, valid, n);
    });
  }
  return sp_run<AmxAttnBackend>(p, config);
}

}  // namespace

const KernelEntry kSparsePrefillAmx = {
    "sparse_prefill.amx", Op::kSparsePrefill, Isa::kAmx, sp_unsupported, nullptr, run_amx};

}  // namespace openmla
