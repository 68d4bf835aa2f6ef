// Online-softmax driver shared by the CPU dense-decode and sparse-prefill kernels: M query rows
// (bf16, all reading the same key sequence, e.g. every query head of one kv head x the seq_q
// queries of a request) attend to keys handed over in blocks of at most Backend::kBlockN rows.
// Rows and keys may be fp16 instead where the backend declares kReadsFp16 (it widens them to
// fp32 exactly); the others only ever see bf16 (their kernels reject fp16 up front).
// Layouts: keys 16-bit [kBlockN][D] (filled by the caller, or read in place from a 16-bit cache
// 16 equally spaced rows at a time, see KeyTiles; V = K[:, 0:512]), scores / P fp32
// [n_pad][Mp] ("S^T": one row per key, heads along the vector, Mp = M rounded up to 16), running
// max m (log2 units), sum l and accumulator O fp32 [Mp][512]. The backend supplies the two GEMMs
// (QK -> S^T, P.V -> O) and the block softmax; this file only sequences them.
// Invariants: key rows [n, n_pad) are zeroed before the GEMMs (P is 0 there, so no 0 * NaN);
// per-row key limits (causal) are applied as -inf scores; a row that saw no key finishes with
// lse -inf and zeros (combine_partials turns that into out 0, lse +inf).
// Everything has internal linkage: this header is compiled under different ISA flags.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>

#include "cpu/aligned_buffer.h"
#include "openmla/core.h"

namespace openmla {
namespace {

constexpr int64_t kRowsDimV = 512;

/// Software prefetch (to L2) of the next block's token records, spread by the backend over the
/// current block's GEMM loops so that the cache stream overlaps with compute.
struct LinePrefetcher {
  const uint8_t* const* records = nullptr;
  int64_t count = 0;  ///< records
  int64_t bytes = 0;  ///< bytes per record
  int64_t next = 0, offset = 0;
  int64_t per_call = 4;  ///< lines per tick(), set by plan() from the backend's tick count
  /// Spreads the remaining lines evenly over `calls` ticks.
  void plan(int64_t calls) {
    const int64_t lines = (count - next) * (bytes / 64 + 1);
    per_call = calls > 0 ? std::max<int64_t>(1, (lines + calls - 1) / calls) : lines;
  }
  void tick() { issue(per_call); }
  void issue(int64_t lines) {
    for (; lines > 0 && next < count; --lines) {
      __builtin_prefetch(records[next] + offset, 0, 2);
      offset += 64;
      if (offset >= bytes) {
        __builtin_prefetch(records[next] + bytes - 1, 0, 2);
        offset = 0;
        ++next;
      }
    }
  }
  void flush() { issue(count * (bytes / 64 + 1)); }
};

/// Whether Backend also reads fp16 rows and keys: it declares `static constexpr bool
/// kReadsFp16 = true` and `void set_fp16(bool)`.
template <class Backend, class = void>
struct BackendReadsFp16 : std::false_type {};
template <class Backend>
struct BackendReadsFp16<Backend, std::void_t<decltype(Backend::kReadsFp16)>>
    : std::integral_constant<bool, Backend::kReadsFp16> {};

constexpr int64_t kMaxKeyTiles = 16;  ///< 16-row key tiles per block at most (kBlockN <= 256)

/// The current block's key rows as 16-row tiles: tile i (rows 16 i .. 16 i + 15) starts at ptr[i]
/// with rows stride[i] bytes apart: the engine's key buffer, or the cache itself for tiles the
/// caller reads in place (16 equally spaced records of a 16-bit cache; no copy).
struct KeyTiles {
  const uint16_t* ptr[kMaxKeyTiles];
  int64_t stride[kMaxKeyTiles];
  const uint16_t* row(int64_t t) const {
    return reinterpret_cast<const uint16_t*>(reinterpret_cast<const char*>(ptr[t / 16]) +
                                             (t % 16) * stride[t / 16]);
  }
};

template <class Backend>
class RowsAttention {
 public:
  static constexpr int64_t kBlockN = Backend::kBlockN;
  static_assert(kBlockN <= 16 * kMaxKeyTiles, "KeyTiles holds at most 256 rows");

  /// Starts a new key sequence for rows q_rows[0..M) (each D values of `dtype`, which is also the
  /// dtype of the keys: kBF16, or kF16 for a backend that reads fp16).
  void begin(int64_t M, int64_t D, float softmax_scale, bool track_max,
             const uint16_t* const* q_rows, DType dtype = DType::kBF16) {
    M_ = M;
    Mp_ = (M + 15) / 16 * 16;
    D_ = D;
    scale_ = softmax_scale;
    c_ = softmax_scale * 1.4426950408889634f;
    track_max_ = track_max;
    st_ = st_buf_.get(kBlockN * Mp_);
    m_ = m_buf_.get(Mp_);
    l_ = l_buf_.get(Mp_);
    alpha_ = alpha_buf_.get(Mp_);
    raw_max_ = max_buf_.get(Mp_);
    o_ = o_buf_.get(Mp_ * kRowsDimV);
    keys_ = key_buf_.get(kBlockN * D);
    reset_tiles();
    staged_ = 0;
    for (int64_t r = 0; r < Mp_; ++r) {
      m_[r] = -std::numeric_limits<float>::infinity();
      l_[r] = 0.0f;
      raw_max_[r] = -std::numeric_limits<float>::infinity();
    }
    std::memset(o_, 0, sizeof(float) * Mp_ * kRowsDimV);
    if constexpr (BackendReadsFp16<Backend>::value) backend_.set_fp16(dtype == DType::kF16);
    backend_.begin(M, Mp_, D, q_rows);
  }

  /// Buffer for the next block's keys: [kBlockN][D] 16-bit words of begin()'s dtype.
  uint16_t* keys() { return keys_; }

  /// Rows [16 i, 16 i + 16) of the next block are read in place at base + r * stride_bytes (the
  /// caller does not copy them into keys()); call before stage_v() reaches them. Reset by step().
  void key_tile_in_place(int64_t i, const uint16_t* base, int64_t stride_bytes) {
    tiles_.ptr[i] = base;
    tiles_.stride[i] = stride_bytes;
  }
  const Backend& backend() const { return backend_; }
  Backend& backend() { return backend_; }

  /// The gather has written key rows [0, 2 * pairs) of the current block: lets the backend
  /// repack their V part while they are still in L1 (optional; step() packs the rest).
  void stage_v(int64_t pairs) {
    backend_.pack_v(tiles_, staged_, pairs);
    staged_ = pairs;
  }

  /// Consumes keys()[0..n). row_limit (nullable, M entries): row r only sees keys n' <
  /// row_limit[r]. prefetch (nullable): records of the next block, prefetched while this one
  /// computes.
  void step(int64_t n, const int64_t* row_limit, LinePrefetcher* prefetch = nullptr) {
    LinePrefetcher none;
    LinePrefetcher& pf = prefetch != nullptr ? *prefetch : none;
    if (n <= 0) return;
    const int64_t n_pad = (n + Backend::kPadN - 1) / Backend::kPadN * Backend::kPadN;
    if (n_pad > n) std::memset(keys_ + n * D_, 0, sizeof(uint16_t) * (n_pad - n) * D_);
    backend_.pack_v(tiles_, staged_, n_pad / 2);
    staged_ = 0;
    pf.plan(backend_.prefetch_ticks(n_pad));
    backend_.qk(tiles_, n_pad, st_, pf);
    if (row_limit != nullptr) {
      int64_t lo = n;
      for (int64_t r = 0; r < M_; ++r) lo = std::min(lo, std::max<int64_t>(row_limit[r], 0));
      for (int64_t k = lo; k < n; ++k) {
        float* row = st_ + k * Mp_;
        for (int64_t r = 0; r < M_; ++r)
          if (k >= row_limit[r]) row[r] = -std::numeric_limits<float>::infinity();
      }
    }
    if (track_max_) {
      for (int64_t k = 0; k < n; ++k) {
        const float* row = st_ + k * Mp_;
        for (int64_t r = 0; r < Mp_; ++r) raw_max_[r] = std::max(raw_max_[r], row[r]);
      }
    }
    if (backend_.softmax(st_, n, n_pad, Mp_, c_, m_, l_, alpha_)) {
      for (int64_t r = 0; r < M_; ++r) {
        const float a = alpha_[r];
        if (a == 1.0f) continue;
        float* o = o_ + r * kRowsDimV;
        for (int64_t i = 0; i < kRowsDimV; ++i) o[i] *= a;
      }
    }
    backend_.pv(st_, n_pad, o_, pf);
    pf.flush();
    reset_tiles();
  }

  /// Writes row r's normalised output (512 floats at o_part + r * o_stride) and natural-log lse
  /// (-inf when it saw nothing) to lse_part[r]; max_logit (nullable) gets scale * max score.
  void finish(float* o_part, int64_t o_stride, float* lse_part, float* max_logit) {
    backend_.end();
    constexpr double kLn2 = 0.6931471805599453;
    for (int64_t r = 0; r < M_; ++r) {
      float* o = o_part + r * o_stride;
      if (max_logit != nullptr) max_logit[r] = raw_max_[r] * scale_;
      if (!(l_[r] > 0.0f)) {
        std::memset(o, 0, kRowsDimV * sizeof(float));
        lse_part[r] = -std::numeric_limits<float>::infinity();
        if (max_logit != nullptr) max_logit[r] = -std::numeric_limits<float>::infinity();
        continue;
      }
      const float inv = 1.0f / l_[r];
      const float* a = o_ + r * kRowsDimV;
      for (int64_t i = 0; i < kRowsDimV; ++i) o[i] = a[i] * inv;
      lse_part[r] = static_cast<float>(
          (static_cast<double>(m_[r]) + std::log2(static_cast<double>(l_[r]))) * kLn2);
    }
  }

 private:
  void reset_tiles() {
    for (int64_t i = 0; i < kMaxKeyTiles; ++i) {
      tiles_.ptr[i] = keys_ + std::min(i * 16, kBlockN) * D_;
      tiles_.stride[i] = D_ * 2;
    }
  }

  Backend backend_;
  KeyTiles tiles_;
  int64_t M_ = 0, Mp_ = 0, D_ = 0, staged_ = 0;
  float scale_ = 0.0f, c_ = 0.0f;
  bool track_max_ = false;
  float *st_ = nullptr, *m_ = nullptr, *l_ = nullptr, *alpha_ = nullptr, *raw_max_ = nullptr,
        *o_ = nullptr;
  uint16_t* keys_ = nullptr;
  AlignedBuffer<float> st_buf_, m_buf_, l_buf_, alpha_buf_, max_buf_, o_buf_;
  AlignedBuffer<uint16_t> key_buf_;
};

}  // namespace
}  // namespace openmla
