// Template body of cli::time_runs (kept out of cli_common.h's declarations).
#include <algorithm>

namespace openmla::cli {

template <typename Fn>
Timing time_runs(int warmup, int iters, Fn&& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> samples;
  for (int i = 0; i < std::max(iters, 1); ++i) {
    const double start = now_seconds();
    fn();
    samples.push_back(now_seconds() - start);
  }
  std::sort(samples.begin(), samples.end());
  return {samples[samples.size() / 2], samples.front()};
}

}  // namespace openmla::cli
