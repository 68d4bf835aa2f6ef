// Shared, ISA-free scaffolding of the CPU sparse-decode kernels (sparse_decode_{amx,avx512,avx2}).
//
// Split plan: row (b, s) has the position list [0, topk) of the main cache followed by
// [0, extra_topk) of the extra cache, P = topk + extra_topk positions. It is cut into
// pieces = ceil(P / max_piece_slots(heads_q)) pieces of ceil(P / pieces) positions. This depends
// only on the request's shape, never on batch or thread count, so outputs are bitwise identical
// for any thread count and batch composition. When (row, piece) units are fewer than threads,
// each unit is also cut into head groups (heads are independent lanes, so no bit changes).
// Multi-piece rows write normalised fp32 partials + natural-log lse that the single combine
// routine (cpu/combine.h) merges; single-piece rows go through the same routine with one piece
// straight from the kernel's finish (no partial buffer).
// Inside a piece the valid slots are compacted (invalid / out-of-range / past-length slots are
// never dereferenced) and handed to the kernel in blocks of at most `max_rows` tokens.
// Everything has internal linkage: this header is compiled under different ISA flags.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "core/thread_pool.h"
#include "cpu/aligned_buffer.h"
#include "cpu/combine.h"
#include "cpu/token_list_attention.h"
#include "ops/common/api_checks.h"
#include "ops/sparse_decode/sparse_decode.h"

namespace openmla {
namespace {

// Positions per piece: many heads make a long list worth one task (no partials, no merge); with
// few heads, pieces keep small-batch rows parallel. Heads are part of the shape, so this still
// depends on the request's shape alone.
inline int64_t max_piece_slots(int64_t heads_q) { return heads_q >= 64 ? 4096 : 1024; }
constexpr int64_t kDimV = 512;

struct PieceGeometry {
  int64_t total = 0;   ///< positions per row (main + extra)
  int64_t pieces = 1;  ///< pieces per row
  int64_t length = 0;  ///< positions per piece (the last may be shorter)
};

inline PieceGeometry piece_geometry(const SparseDecodeParams& p) {
  PieceGeometry g;
  g.total = p.indices.topk + (p.has_extra ? p.extra_indices.topk : 0);
  const int64_t max_slots = max_piece_slots(p.heads_q);
  g.pieces = std::max<int64_t>(1, (g.total + max_slots - 1) / max_slots);
  g.length = (g.total + g.pieces - 1) / g.pieces;
  return g;
}

inline int sd_choose_splits(const void* params, int) {
  return static_cast<int>(piece_geometry(*static_cast<const SparseDecodeParams*>(params)).pieces);
}

inline const char* sd_unsupported(const void* params) {
  const auto& p = *static_cast<const SparseDecodeParams*>(params);
  if (const char* why = head_dims_unsupported(p.head_dim, p.head_dim_v)) return why;
  if (p.heads_q > 4096) return "heads_q above 4096";
  return nullptr;
}

/// Divides slot ids by the page size (shift when it is a power of two).
struct PageDiv {
  int64_t page = 1;
  int shift = -1;
  explicit PageDiv(int64_t page_size) : page(page_size) {
    if (page_size > 0 && (page_size & (page_size - 1)) == 0) {
      shift = 0;
      while ((int64_t{1} << shift) < page_size) ++shift;
    }
  }
  void split(int64_t index, int64_t* block, int64_t* offset) const {
    if (shift >= 0) {
      *block = index >> shift;
      *offset = index & (page - 1);
    } else {
      *block = index / page;
      *offset = index - *block * page;
    }
  }
};

/// Walks the valid slots of positions [begin, end) of row (b, s), main list then extra list.
class SlotCursor {
 public:
  SlotCursor(const SparseDecodeParams& p, int64_t b, int64_t s, int64_t begin, int64_t end)
      : p_(p),
        b_(b),
        s_(s),
        pos_(begin),
        end_(end),
        main_div_(p.kv.page_size),
        extra_div_(p.has_extra ? p.extra_kv.page_size : 1) {}

  /// Fills up to `max` refs with the next valid slots; returns how many (0: done).
  int64_t next(TokenRef* refs, int64_t max) {
    int64_t n = 0;
    const int64_t topk = p_.indices.topk;
    while (n < max && pos_ < end_) {
      if (pos_ < topk) {
        n += scan(p_.kv, main_div_, p_.indices, pos_, std::min(end_, topk), refs + n, max - n,
                  &pos_, 0);
      } else {
        n += scan(p_.extra_kv, extra_div_, p_.extra_indices, pos_ - topk, end_ - topk, refs + n,
                  max - n, &pos_, topk);
      }
    }
    return n;
  }

 private:
  int64_t scan(const PagedCache& cache, const PageDiv& div, const IndexList& list, int64_t from,
               int64_t to, TokenRef* refs, int64_t max, int64_t* pos, int64_t pos_base) {
    const int64_t length = list.length(b_);
    const int64_t num_slots = cache.num_slots();
    const int32_t* row = list.row(b_, s_);
    const int64_t stop = std::min(to, length);
    int64_t n = 0, q = from;
    for (; q < stop && n < max; ++q) {
      const int32_t index = row[q * list.stride_k];
      if (!slot_is_valid(index, q, length, num_slots)) continue;
      int64_t block, offset;
      div.split(index, &block, &offset);
      refs[n].rec = cache.token_record(block, offset, 0);
      refs[n].scales =
          cache.format == KvFormat::kModel1 ? cache.model1_scales(block, offset) : nullptr;
      ++n;
    }
    if (q >= stop) q = to;  // positions past the length are never read
    *pos = pos_base + q;
    return n;
  }

  const SparseDecodeParams& p_;
  int64_t b_, s_, pos_, end_;
  PageDiv main_div_, extra_div_;
};

/// One task: positions [begin, end) of row (b, s) for heads [h_begin, h_end).
struct PieceTask {
  int64_t b, s, begin, end, h_begin, h_end;
};

/// Where a task's finished heads go. With one piece per row the row is final: `emit` applies the
/// combine (sink, bf16 rounding) straight into `out` / `lse`; otherwise it stores the normalised
/// partial for the merge pass.
class PieceOutput {
 public:
  PieceOutput(const SparseDecodeParams& p, const PieceTask& t, float* part_out, float* part_lse,
              bool direct)
      : p_(p), t_(t), part_out_(part_out), part_lse_(part_lse), direct_(direct) {}

  /// Head h (absolute): `o` = 512 normalised floats, `lse` natural log (-inf: empty).
  void emit(int64_t h, const float* o, float lse) const {
    if (!direct_) {
      std::memcpy(part_out_ + h * kDimV, o, kDimV * sizeof(float));
      part_lse_[h] = lse;
      return;
    }
    combine_partials(
        1, o, 0, &lse, 0, kDimV, p_.attn_sink ? p_.attn_sink + h * p_.sink_stride : nullptr,
        p_.out + t_.b * p_.out_stride[0] + t_.s * p_.out_stride[1] + h * p_.out_stride[2],
        p_.lse + t_.b * p_.lse_stride[0] + h * p_.lse_stride[1] + t_.s * p_.lse_stride[2]);
  }

 private:
  const SparseDecodeParams& p_;
  const PieceTask& t_;
  float* part_out_;
  float* part_lse_;
  bool direct_;
};

/// Head groups per (row, piece) unit: 1 while the units alone occupy every thread, else enough
/// groups of >= 32 heads to do so. Heads are independent lanes of every kernel, so the grouping
/// never changes a result bit; token pieces (which do) stay a function of the shape alone.
inline int64_t head_groups(int64_t heads, int64_t units, int threads) {
  if (units >= threads) return 1;
  return std::max<int64_t>(1, std::min<int64_t>((threads + units - 1) / units, heads / 32));
}

/// Merges the partials of every row of a split plan (pieces > 1) into out / lse.
inline void combine_rows(const SparseDecodeParams& p, const PieceGeometry& g, const float* part_out,
                         const float* part_lse, int num_threads) {
  constexpr int64_t kHeadGroup = 16;
  const int64_t rows = p.batch * p.seq_q, per_task = p.heads_q * kDimV;
  const int64_t groups = (p.heads_q + kHeadGroup - 1) / kHeadGroup;
  parallel_for(rows * groups, num_threads, [&](int64_t task, int) {
    const int64_t row = task / groups, group = task % groups;
    const int64_t b = row / p.seq_q, s = row % p.seq_q;
    const float* out_base = part_out + row * g.pieces * per_task;
    const float* lse_base = part_lse + row * g.pieces * p.heads_q;
    const int64_t h_end = std::min(p.heads_q, (group + 1) * kHeadGroup);
    for (int64_t h = group * kHeadGroup; h < h_end; ++h) {
      combine_partials(g.pieces, out_base + h * kDimV, per_task, lse_base + h, p.heads_q, kDimV,
                       p.attn_sink ? p.attn_sink + h * p.sink_stride : nullptr,
                       p.out + b * p.out_stride[0] + s * p.out_stride[1] + h * p.out_stride[2],
                       p.lse + b * p.lse_stride[0] + h * p.lse_stride[1] + s * p.lse_stride[2]);
    }
  });
}

/// Runs every task through `piece_fn(const PieceTask&, const PieceOutput&)`, which must emit each
/// head of [h_begin, h_end) once; rows cut into several pieces are then merged by combine_rows.
template <typename PieceFn>
Status run_split_tasks(const SparseDecodeParams& p, const ExecConfig& config, PieceFn&& piece_fn) {
  const PieceGeometry g = piece_geometry(p);
  const int64_t rows = p.batch * p.seq_q;
  const int64_t units = rows * g.pieces;
  if (units == 0) return Status::Ok();
  const int64_t groups = head_groups(p.heads_q, units, config.num_threads);
  const int64_t group_heads = ((p.heads_q + groups - 1) / groups + 15) / 16 * 16;
  const bool direct = g.pieces == 1;
  const int64_t per_task = p.heads_q * kDimV;
  static thread_local AlignedBuffer<float> part_out_buf, part_lse_buf;
  float* part_out = direct ? nullptr : part_out_buf.get(units * per_task);
  float* part_lse = direct ? nullptr : part_lse_buf.get(units * p.heads_q);
  parallel_for(units * groups, config.num_threads, [&](int64_t task, int) {
    const int64_t unit = task / groups, group = task % groups;
    const int64_t row = unit / g.pieces, piece = unit % g.pieces;
    PieceTask t;
    t.b = row / p.seq_q;
    t.s = row % p.seq_q;
    t.begin = piece * g.length;
    t.end = std::min(g.total, t.begin + g.length);
    t.h_begin = group * group_heads;
    t.h_end = std::min(p.heads_q, t.h_begin + group_heads);
    if (t.h_begin >= t.h_end) return;
    const PieceOutput out(p, t, direct ? nullptr : part_out + unit * per_task,
                          direct ? nullptr : part_lse + unit * p.heads_q, direct);
    piece_fn(t, out);
  });
  if (!direct) combine_rows(p, g, part_out, part_lse, config.num_threads);
  return Status::Ok();
}

/// Normalises the running state of heads [t.h_begin, t.h_end) (m, l, acc indexed from h_begin;
/// log2 units) and emits each head.
inline void finish_piece_state(const PieceTask& t, const float* m, const float* l, const float* acc,
                               int64_t acc_stride, const PieceOutput& out) {
  finish_heads(t.h_end - t.h_begin, m, l, acc, acc_stride,
               [&](int64_t i, const float* o, float lse) { out.emit(t.h_begin + i, o, lse); });
}

}  // namespace
}  // namespace openmla
