// Lightning-indexer cases for the CLI (verify, bench): a random page-major indexer cache (kFp8
// or kFp4 bytes written directly: finite codes, positive scales) behind a shuffled block table,
// NaN bytes (0xFF: e4m3 NaN codes, NaN fp32 / ue8m0 scales) in every slot and page no row sees,
// e4m3 queries and fp32 head weights; runs of the paged logits and the fused top-k with a given
// kernel; and the checks of a kernel against the reference.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "openmla/indexer.h"

namespace openmla::testing {

struct IndexerConfig {
  IndexerKeyFormat format = IndexerKeyFormat::kFp8;
  int64_t batch = 4, next_n = 1, heads = 64, tokens = 32768, page_size = 64, topk = 512;
  bool random_lengths = false;  ///< context lengths uniform in [0, tokens] instead of all `tokens`
  uint64_t seed = 1;
};

struct IndexerCase {
  IndexerConfig config;
  int64_t bytes_per_token = 0, block_stride = 0, num_blocks = 0, max_blocks = 0, max_len = 0;
  std::vector<uint8_t> q, cache;
  std::vector<float> weights;
  std::vector<int32_t> context_lens, block_table;

  int64_t visible(int64_t b, int64_t j) const;
  PagedMqaLogitsArgs logits_args(float* logits) const;  ///< logits [batch * next_n, max_len]
  /// Sum over rows of the visible tokens (the keys scored).
  int64_t scored_keys() const;
};

IndexerCase make_indexer_case(const IndexerConfig& config);

/// 2 * heads * 128 FLOP per scored key.
double indexer_flops(const IndexerCase& c);
/// Bytes read: every request's visible cache records once, plus q and weights; `logits`: plus
/// the fp32 logits written.
double indexer_bytes(const IndexerCase& c, bool logits);

struct IndexerRun {
  Status status;
  std::string kernel;
  std::vector<float> logits;     ///< paged_mqa_logits
  std::vector<int32_t> indices;  ///< paged_indexer_topk [batch, next_n, topk]
  std::vector<int32_t> lengths;
};
/// kernel "" = the registry's choice.
IndexerRun run_indexer_logits(const IndexerCase& c, const std::string& kernel, int threads);
IndexerRun run_indexer_topk(const IndexerCase& c, const std::string& kernel, int threads);

/// Logits within 1e-5 * sum_h |w_h| sum_d |q_hd k_d| |k_scale| of the reference, -inf past each
/// row's length (message empty when ok); max_err is the largest |answer - reference|.
bool check_indexer_logits(const IndexerCase& c, const IndexerRun& answer,
                          const IndexerRun& reference, double* max_err, std::string* message);
/// The fused top-k: lengths, -1 padding, ascending distinct slots of visible tokens, and every
/// token that differs from the reference logits' top-k within tolerance of its k-th score.
bool check_indexer_topk(const IndexerCase& c, const IndexerRun& answer,
                        const IndexerRun& reference_logits, std::string* message);

}  // namespace openmla::testing
