// Top-k selection of the indexer: partial selection (std::nth_element) on 64-bit keys that order
// candidates by (score desc, position asc), behind a running floor when selecting from scores,
// then the selected positions in ascending order.
#include <algorithm>
#include <functional>

#include "ops/indexer/indexer.h"

namespace openmla {

int64_t topk_select(uint64_t* keys, int64_t n, int64_t k) {
  if (n <= k) return n;
  std::nth_element(keys, keys + (k - 1), keys + n, std::greater<uint64_t>());
  return k;
}

// Keys stream into a buffer of 2k; when it fills, the top k are kept and the k-th becomes a floor
// that later keys must pass (keys are distinct, so one below the floor has k keys above it and
// cannot be selected). Same set as selecting from all n keys, in ~n compares for random scores.
int64_t topk_of_scores(const float* scores, int64_t n, int64_t first_pos, int64_t k,
                       uint64_t* keys) {
  if (k <= 0) return 0;
  const int64_t capacity = std::min(n, 2 * k);
  uint64_t floor = 0;
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t key = topk_key(scores[i], first_pos + i);
    keys[m] = key;  // kept only when it passes the floor (no unpredictable branch)
    m += key >= floor ? 1 : 0;
    if (m == capacity && i + 1 < n) {
      m = topk_select(keys, m, k);
      floor = keys[k - 1];
    }
  }
  return topk_select(keys, m, k);
}

void topk_write_row(uint64_t* keys, int64_t count, int64_t k, const TopkSlotMap& map, int32_t* out,
                    int64_t out_stride, int32_t* length) {
  // Ascending position is descending key low word; sorting the positions directly is simpler.
  for (int64_t i = 0; i < count; ++i) keys[i] = static_cast<uint64_t>(topk_key_pos(keys[i]));
  std::sort(keys, keys + count);
  for (int64_t i = 0; i < count; ++i) out[i * out_stride] = map(static_cast<int64_t>(keys[i]));
  for (int64_t i = count; i < k; ++i) out[i * out_stride] = -1;
  if (length) *length = static_cast<int32_t>(count);
}

}  // namespace openmla
