// Shared, ISA-free scaffolding of the CPU sparse-decode kernels (sparse_decode_{amx,avx512,avx2}).
//
// Split plan: row (b, s) has the position list [0, topk) of the main cache followed by
// [0, extra_topk) of the extra cache, P = topk + extra_topk positions. It is cut into
// pieces = ceil(P / kMaxPieceSlots) pieces of ceil(P / pieces) positions. This depends only on
// the request's own shape, never on batch or thread count, so outputs are bitwise identical
// for any thread count and batch composition. Each (row, piece) is one task writing normalised
// fp32 partials + natural-log lse; the single combine routine (cpu/combine.h) then merges them
// (also for one piece, so the rounding path never changes).
// Inside a piece the valid slots are compacted (invalid / out-of-range / past-length slots are
// never dereferenced) and handed to the kernel in blocks of at most `max_rows` tokens.
// Everything has internal linkage: this header is compiled under different ISA flags.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <limits>
#include <new>

#include "core/thread_pool.h"
#include "cpu/aligned_buffer.h"
#include "cpu/combine.h"
#include "ops/sparse_decode/sparse_decode.h"

namespace openmla {
namespace {

constexpr int64_t kMaxPieceSlots = 1024;
constexpr int64_t kDimV = 512;

struct PieceGeometry {
  int64_t total = 0;   ///< positions per row (main + extra)
  int64_t pieces = 1;  ///< pieces per row
  int64_t length = 0;  ///< positions per piece (the last may be shorter)
};

inline PieceGeometry piece_geometry(const SparseDecodeParams& p) {
  PieceGeometry g;
  g.total = p.indices.topk + (p.has_extra ? p.extra_indices.topk : 0);
  g.pieces = std::max<int64_t>(1, (g.total + kMaxPieceSlots - 1) / kMaxPieceSlots);
  g.length = (g.total + g.pieces - 1) / g.pieces;
  return g;
}

inline int sd_choose_splits(const void* params, int) {
  return static_cast<int>(piece_geometry(*static_cast<const SparseDecodeParams*>(params)).pieces);
}

inline const char* sd_unsupported(const void* params) {
  const auto& p = *static_cast<const SparseDecodeParams*>(params);
  if (p.head_dim_v != kDimV) return "head_dim_v must be 512";
  if (p.head_dim != 576 && p.head_dim != 512) return "head_dim must be 576 or 512";
  if (p.heads_q > 4096) return "heads_q above 4096";
  return nullptr;
}

struct TokenRef {
  const uint8_t* rec;
  const uint8_t* scales;  ///< MODEL1 scale record, else unused
};

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
      : p_(p), b_(b), s_(s), pos_(begin), end_(end), main_div_(p.kv.page_size),
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
      refs[n].scales = cache.format == KvFormat::kModel1 ? cache.model1_scales(block, offset)
                                                          : nullptr;
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

/// Runs every (row, piece) task through `piece_fn(b, s, begin, end, o_part, lse_part)` — which
/// must write heads_q rows of 512 normalised floats (stride 512) and heads_q lse values — then
/// merges each row with combine_partials.
template <typename PieceFn>
Status run_split_tasks(const SparseDecodeParams& p, const ExecConfig& config, PieceFn&& piece_fn) {
  const PieceGeometry g = piece_geometry(p);
  const int64_t rows = p.batch * p.seq_q;
  const int64_t tasks = rows * g.pieces;
  if (tasks == 0) return Status::Ok();
  const int64_t per_task = p.heads_q * kDimV;
  static thread_local AlignedBuffer<float> part_out_buf, part_lse_buf;
  float* part_out = part_out_buf.get(tasks * per_task);
  float* part_lse = part_lse_buf.get(tasks * p.heads_q);
  parallel_for(tasks, config.num_threads, [&](int64_t task, int) {
    const int64_t row = task / g.pieces, piece = task % g.pieces;
    const int64_t begin = piece * g.length;
    const int64_t end = std::min(g.total, begin + g.length);
    piece_fn(row / p.seq_q, row % p.seq_q, begin, end, part_out + task * per_task,
             part_lse + task * p.heads_q);
  });
  constexpr int64_t kHeadGroup = 16;
  const int64_t groups = (p.heads_q + kHeadGroup - 1) / kHeadGroup;
  parallel_for(rows * groups, config.num_threads, [&](int64_t task, int) {
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
  return Status::Ok();
}

/// Per-head running softmax state of one piece, in log2 units.
inline void finish_piece_state(int64_t heads, const float* m, const float* l, const float* acc,
                               int64_t acc_stride, float* o_part, float* lse_part) {
  constexpr double kLn2 = 0.6931471805599453;
  for (int64_t h = 0; h < heads; ++h) {
    float* o = o_part + h * kDimV;
    if (!(l[h] > 0.0f)) {
      std::memset(o, 0, kDimV * sizeof(float));
      lse_part[h] = -std::numeric_limits<float>::infinity();
      continue;
    }
    const float inv = 1.0f / l[h];
    const float* __restrict a = acc + h * acc_stride;
    float* __restrict dst = o;
    for (int64_t i = 0; i < kDimV; ++i) dst[i] = a[i] * inv;
    lse_part[h] = static_cast<float>((static_cast<double>(m[h]) + std::log2(static_cast<double>(l[h]))) * kLn2);
  }
}

}  // namespace
}  // namespace openmla
