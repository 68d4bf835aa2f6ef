#include "cpu/peak_probe.h"

#include <emmintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/thread_pool.h"
#include "dispatch/cpu_features.h"

namespace openmla {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// Restores the pool's pinning to its environment default on scope exit.
struct PinScope {
  PinScope() { pin_threads(true); }
  ~PinScope() {
    const char* env = std::getenv("OPENMLA_PIN_THREADS");
    pin_threads(env != nullptr && env[0] == '1');
  }
};

double peak_loop_scalar(long iters) {
  volatile float seed = 1.0f;
  float a[8], b = 0.999f, c = 1e-7f;
  for (int i = 0; i < 8; ++i) a[i] = seed + i;
  for (long it = 0; it < iters; ++it)
    for (int i = 0; i < 8; ++i) a[i] = a[i] * b + c;
  float s = 0;
  for (float v : a) s += v;
  seed = s;
  return 2.0 * 8.0 * static_cast<double>(iters);
}

struct ProbeLoop {
  double (*loop)(long) = peak_loop_scalar;
  long iters = 20000000;  ///< iterations of one ~30 ms measurement
};

ProbeLoop probe_loop() {
  const Isa isa = effective_isa();
  if (isa >= Isa::kAmx) return {detail::peak_loop_amx, 200000};  // 4 TDPBF16PS each
  if (isa >= Isa::kAvx512) return {detail::peak_loop_avx512, 2000000};
  if (isa >= Isa::kAvx2) return {detail::peak_loop_avx2, 2000000};
  return {};
}

/// Runs fn() once on each of `threads` threads and returns the sum of the results.
template <class Fn>
double sum_over_threads(int threads, Fn&& fn) {
  std::vector<double> value(static_cast<size_t>(threads));
  parallel_for(threads, threads, [&](int64_t t, int) { value[t] = fn(); });
  double total = 0;
  for (double v : value) total += v;
  return total;
}

/// TFLOP/s of one run of `probe` on every thread, each thread timing its own loop (waking the
/// threads is not counted).
double rate_on_threads(const ProbeLoop& probe, int threads) {
  return sum_over_threads(threads, [&] {
    const double t0 = now_seconds();
    const double flops = probe.loop(probe.iters);
    return flops / (now_seconds() - t0) * 1e-12;
  });
}

/// FLOPs of one run of `iters` iterations of `probe` on every thread.
double run_probe_on_threads(const ProbeLoop& probe, int threads, long iters) {
  return sum_over_threads(threads, [&] { return probe.loop(iters); });
}

/// Best of 7 timed runs of `iters` iterations of `loop` on every thread (after a short warm-up).
double best_of_runs_tflops(double (*loop)(long), long iters, int threads) {
  PinScope pin;
  const ProbeLoop probe = {loop, iters};
  run_probe_on_threads(probe, threads, iters / 10);  // warm-up
  double best = 0.0;
  for (int rep = 0; rep < 7; ++rep) {
    const double t0 = now_seconds();
    const double flops = run_probe_on_threads(probe, threads, iters);
    best = std::max(best, flops / (now_seconds() - t0) * 1e-12);
  }
  return best;
}

}  // namespace

double measure_matmul_peak_tflops(int threads) {
  const ProbeLoop probe = probe_loop();
  return best_of_runs_tflops(probe.loop, probe.iters, std::max(1, threads));
}

double run_matmul_probe_tflops(int threads) {
  const ProbeLoop probe = probe_loop();
  return rate_on_threads({probe.loop, probe.iters / 30}, std::max(1, threads));
}

TileGemmCeiling measure_tile_gemm_ceiling(int threads) {
  TileGemmCeiling c;
  if (effective_isa() < Isa::kAmx) return c;
  threads = std::max(1, threads);
  PinScope pin;
  const ProbeLoop peak = {detail::peak_loop_amx, 200000 / 15};  // ~2 ms each
  const ProbeLoop gemm = {detail::tile_gemm_loop_amx, 10000 / 15};
  rate_on_threads(gemm, threads);  // warm-up (and the buffers)
  std::vector<double> rates, ratios;
  for (int rep = 0; rep < 15; ++rep) {
    const double r_peak = rate_on_threads(peak, threads);
    const double r_gemm = rate_on_threads(gemm, threads);
    rates.push_back(r_gemm);
    ratios.push_back(r_gemm / r_peak);
  }
  std::sort(rates.begin(), rates.end());
  std::sort(ratios.begin(), ratios.end());
  c.tflops = rates[rates.size() / 2];
  c.frac_of_peak = ratios[ratios.size() / 2];
  return c;
}

double measure_stream_bandwidth_gbps(int threads) {
  threads = std::max(1, threads);
  const std::size_t total = std::size_t{1} << 30;
  const std::size_t per = total / static_cast<std::size_t>(threads) / 64 * 64;
  uint8_t* buf = static_cast<uint8_t*>(std::aligned_alloc(64, per * threads));
  if (buf == nullptr) return 0.0;
  PinScope pin;
  parallel_for(threads, threads, [&](int64_t t, int) { std::memset(buf + t * per, 1, per); });
  std::vector<uint64_t> sinks(static_cast<size_t>(threads) * 8);
  double best = 0.0;
  for (int rep = 0; rep < 4; ++rep) {
    const double t0 = now_seconds();
    parallel_for(threads, threads, [&](int64_t t, int) {
      const __m128i* p = reinterpret_cast<const __m128i*>(buf + t * per);
      const std::size_t n = per / 16;
      __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
      for (std::size_t i = 0; i < n; i += 4) {
        a0 = _mm_or_si128(a0, _mm_load_si128(p + i));
        a1 = _mm_or_si128(a1, _mm_load_si128(p + i + 1));
        a2 = _mm_or_si128(a2, _mm_load_si128(p + i + 2));
        a3 = _mm_or_si128(a3, _mm_load_si128(p + i + 3));
      }
      const __m128i a = _mm_or_si128(_mm_or_si128(a0, a1), _mm_or_si128(a2, a3));
      sinks[t * 8] = static_cast<uint64_t>(_mm_cvtsi128_si64(a));
    });
    const double dt = now_seconds() - t0;
    best = std::max(best, static_cast<double>(per * threads) / dt * 1e-9);
  }
  std::free(buf);
  return best;
}

}  // namespace openmla
