// Template body of cli::time_runs_interleaved (kept out of cli_common.h's declarations).
#include <algorithm>

namespace openmla::cli {

template <typename Fn>
std::vector<Timing> time_runs_interleaved(int warmup, int iters, std::size_t count, Fn&& fn) {
  for (int i = 0; i < warmup; ++i)
    for (std::size_t k = 0; k < count; ++k) fn(k);
  std::vector<std::vector<double>> samples(count);
  for (int i = 0; i < std::max(iters, 1); ++i) {
    for (std::size_t k = 0; k < count; ++k) {
      const double start = now_seconds();
      fn(k);
      samples[k].push_back(now_seconds() - start);
    }
  }
  std::vector<Timing> out;
  for (std::vector<double>& s : samples) {
    std::sort(s.begin(), s.end());
    out.push_back({s[s.size() / 2], s.front()});
  }
  return out;
}

}  // namespace openmla::cli
