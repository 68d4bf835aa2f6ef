// Pieces shared by the V3.2 and V4 decode steps (demo_steps.h): views, stage bookkeeping and the
// stage checks.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "demo_steps.h"
#include "openmla/attention.h"
#include "openmla/indexer.h"
#include "tensors.h"

namespace openmla::testing::demo {

Options options(const char* kernel, int threads);

/// Wall-clock stopwatch in milliseconds.
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double ms() const {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_)
        .count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

/// A stage that could not run: check "FAILED: <status>".
StageResult failed_stage(const std::string& stage, const std::string& kernel, const Status& s);

/// Random e4m3 codes of magnitude 2^-2 .. 2^1.875 with random signs (indexer queries).
std::vector<uint8_t> random_e4m3(int64_t n, Rng& rng);
/// shift + scale * x, x about unit-variance bell-shaped (a sum of two random bytes, |x| < 2.5):
/// four values per Rng draw, as the demo fills tens of millions.
std::vector<float> random_floats(int64_t n, Rng& rng, float scale, float shift);
std::vector<uint16_t> random_bf16(int64_t n, Rng& rng, float scale);

/// A shuffled page pool: table [batch, max_blocks] (-1 past a request's pages) over num_blocks
/// pages, one spare page nobody references.
struct BlockTable {
  int64_t num_blocks = 0, max_blocks = 0, page_size = 0;
  std::vector<int32_t> table;
  int32_t slot(int64_t b, int64_t pos) const;  ///< physical slot of position pos of request b
};
BlockTable make_block_table(const std::vector<int64_t>& lengths, int64_t page_size, Rng& rng);

/// One run of paged_indexer_topk with `kernel` (nullptr: the best).
struct TopkRun {
  Status status;
  std::string kernel;
  double ms = 0.0;
  std::vector<int32_t> indices, lengths;  ///< [batch, topk], [batch]
};
TopkRun run_fused_topk(const PagedMqaLogitsArgs& logits_args, int64_t topk, const char* kernel,
                       int threads);

/// What the top-k check needs to score a slot in double precision.
struct TopkScorer {
  const PagedMqaLogitsArgs* args = nullptr;  ///< q, weights and the indexer cache
  int64_t heads = 0;
};

/// The top-k check of demo_steps.h: `answer` against `reference` (same shapes).
StageResult check_topk(const std::string& stage, const TopkRun& answer, const TopkRun& reference,
                       const TopkScorer& scorer, int64_t topk);

/// out within kDecodeOut and lse within kDecodeLse of the reference (compare.h).
bool check_decode_outputs(const std::vector<uint16_t>& out, const std::vector<uint16_t>& ref_out,
                          const std::vector<float>& lse, const std::vector<float>& ref_lse,
                          double* max_err, std::string* message);

/// bf16 values within (|ref| + floor) / 128 of the reference; false with a message otherwise.
bool bf16_close(const std::vector<uint16_t>& got, const std::vector<uint16_t>& ref, double floor,
                double* max_err, std::string* message, const std::string& what);
/// fp32 values within tol (1 + |ref|).
bool f32_close(const std::vector<float>& got, const std::vector<float>& ref, double tol,
               double* max_err, std::string* message, const std::string& what);

/// "ok (<detail>)" or "FAILED: <message>" into the stage.
void finish_stage(StageResult* stage, bool ok, const std::string& detail,
                  const std::string& message);

/// Runs sparse_decode with `kernel` on `args` (outputs bound to fresh buffers).
struct DecodeRun {
  Status status;
  std::string kernel;
  double ms = 0.0;
  std::vector<uint16_t> out;
  std::vector<float> lse;
};
DecodeRun run_decode(SparseDecodeArgs args, const char* kernel, int threads);

/// The sparse_decode stage: best kernel vs sparse_decode.ref on `args`.
StageResult sparse_decode_stage(const std::string& stage, const SparseDecodeArgs& args, int threads,
                                DecodeRun* best);

}  // namespace openmla::testing::demo
