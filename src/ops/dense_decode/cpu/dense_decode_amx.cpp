// Dense decode, amx kernel ("dense_decode.amx").
// Algorithm: split-KV over fixed-size pieces of each request (dense_decode_cpu.h), merge with
// cpu/combine.h. A piece is run one of two ways, chosen by the shape alone:
// - one query token and >= 64 query heads per kv head (the compute-bound decode of V3 / V3.2 /
//   V4 heads): the piece's tokens, in cache order, are the token list of the AMX token-list
//   attention that sparse_decode.amx runs (cpu/token_list_attention_amx.cpp); measured 6-15 %
//   faster than the engine on that shape (BENCHMARKS.md, third round);
// - otherwise the attention-rows engine (cpu/attn_rows_engine.h, AMX backend): all seq_q x
//   heads_q/heads_kv query rows of one kv head form the M dimension, keys are gathered once per
//   block (16-bit records read in place) and shared by every row, causal limits per row.
// Both: AMX-BF16 2x2-blocked tiles, QK with the key rows as A and Q^T (VNNI) as B, PV with P
// (bf16) as A and V (VNNI) as B, fp32 O; FP8 dequantised exactly, once per token.
// Invariants: keys at or past a row's visible length never reach it; piece boundaries and the
// choice of path depend only on the request's shape; deterministic for any thread count.
// fp16: not served (rounding fp16 to bf16 would lose 3 bits; AMX-FP16 tiles are not used), so
// the registry falls through to dense_decode.avx512.
#include "cpu/amx_attn_backend.h"
#include "cpu/token_list_attention.h"
#include "ops/dense_decode/cpu/dense_decode_cpu.h"

namespace openmla {
namespace {

const char* amx_unsupported(const void* params) {
  if (const char* reason = dd_unsupported(params)) return reason;
  if (static_cast<const DenseDecodeParams*>(params)->dtype == DType::kF16)
    return "fp16 needs AMX-FP16 tiles (this kernel computes in AMX-BF16)";
  return nullptr;
}

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

/// Head h of the item -> its partial row (seq_q = 1: row h).
class ItemRows final : public HeadSink {
 public:
  explicit ItemRows(const DdItem& it) : it_(it) {}
  void emit(int64_t h, const float* o, float lse) override {
    std::memcpy(it_.o_part + h * kRowsDimV, o, kRowsDimV * sizeof(float));
    it_.lse_part[h] = lse;
  }

 private:
  const DdItem& it_;
};

void token_list_item(const DenseDecodeParams& p, const DdItem& it) {
  const int64_t group = p.heads_q / p.heads_kv;
  TokenListQuery query;
  query.q = p.q + it.b * p.q_stride[0] + it.g * group * p.q_stride[2];
  query.head_stride = p.q_stride[2];
  query.heads = group;
  query.head_dim = p.head_dim;
  query.format = p.kv.format;
  query.softmax_scale = p.softmax_scale;
  PieceTokens tokens(p, it.b, it.g, it.begin, std::min(it.end, p.visible_length(it.b, 0)));
  ItemRows rows(it);
  amx_attend_token_list(query, tokens, rows);
}

Status run_amx(const void* params, const ExecConfig& config) {
  const auto& p = *static_cast<const DenseDecodeParams*>(params);
  if (p.seq_q == 1 && p.heads_q / p.heads_kv >= kTokenListMinHeads)
    return dd_run_items(p, config, [&](const DdItem& it) { token_list_item(p, it); });
  return dd_run<AmxAttnBackend>(p, config);
}

}  // namespace

const KernelEntry kDenseDecodeAmx = {"dense_decode.amx", Op::kDenseDecode, Isa::kAmx,
                                     amx_unsupported,    dd_choose_splits, run_amx};

}  // namespace openmla
