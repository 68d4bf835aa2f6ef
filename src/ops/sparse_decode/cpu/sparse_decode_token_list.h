// The sparse-decode kernels on the token-list attention (cpu/token_list_attention.h):
// sparse_decode.amx and sparse_decode.avx512bf16 run every task (row, piece, head group) of the
// split plan (sparse_decode_cpu.h) as one call of their ISA's token-list attention, with the
// task's valid slots as the list (each selected token gathered and dequantised once for all
// heads) and its heads as the query.
// Invariants: invalid slots are never read; piece boundaries depend only on the request's shape
// (thread-count / batch invariant results).
// Everything has internal linkage: this header is compiled under different ISA flags.
#pragma once

#include "cpu/token_list_attention.h"
#include "ops/sparse_decode/cpu/sparse_decode_cpu.h"

namespace openmla {
namespace {

/// The valid slots of a task, in order.
class SlotSource final : public TokenSource {
 public:
  SlotSource(const SparseDecodeParams& p, const PieceTask& t)
      : cursor_(p, t.b, t.s, t.begin, t.end) {}
  int64_t next(TokenRef* refs, int64_t max) override { return cursor_.next(refs, max); }

 private:
  SlotCursor cursor_;
};

/// Head i of the task -> head h_begin + i of the row.
class PieceSink final : public HeadSink {
 public:
  PieceSink(const PieceTask& t, const PieceOutput& out) : t_(t), out_(out) {}
  void emit(int64_t h, const float* o, float lse) override { out_.emit(t_.h_begin + h, o, lse); }

 private:
  const PieceTask& t_;
  const PieceOutput& out_;
};

inline Status token_list_run(const void* params, const ExecConfig& config, AttendTokenList attend) {
  const auto& p = *static_cast<const SparseDecodeParams*>(params);
  return run_split_tasks(p, config, [&](const PieceTask& t, const PieceOutput& out) {
    TokenListQuery query;
    query.q = p.q + t.b * p.q_stride[0] + t.s * p.q_stride[1] + t.h_begin * p.q_stride[2];
    query.head_stride = p.q_stride[2];
    query.heads = t.h_end - t.h_begin;
    query.head_dim = p.head_dim;
    query.format = p.kv.format;
    query.softmax_scale = p.softmax_scale;
    SlotSource source(p, t);
    PieceSink sink(t, out);
    attend(query, source, sink);
  });
}

}  // namespace
}  // namespace openmla
