#include "peak_probe.h"

#include <emmintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/thread_pool.h"
#include "dispatch/cpu_features.h"

namespace openmla::probes {
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

// Documented FLOP per cycle per core, by instruction and host:
// - AVX2 FP32 FMA: 2 x 256-bit FMA per cycle on Zen 3 / Zen 4 (AMD Software Optimization Guide for
//   Family 19h, pub. 56665 (Zen 3) and 57647 (Zen 4), "Floating-Point Unit": FP0 and FP1 execute
//   FMA) and on Intel since Haswell (ports 0 and 1; Intel 64 and IA-32 Optimization Reference
//   Manual, vol. 1): 2 x 8 lanes x 2 FLOP = 32.
// - AVX-512 FP32 FMA: Zen 4 executes a 512-bit op as two 256-bit halves (pub. 57647), so still 32;
//   Zen 5 (family 1Ah) has 512-bit FMA pipes (AMD Zen 5 SOG, pub. 58455): 64, untested here;
//   Intel Xeon Gold / Platinum / SPR: 2 x 512-bit FMA (ports 0+1 fused and 5; Intel optimization
//   manual, "Intel AVX-512"): 64. One-FMA-unit SKUs (some Silver / Bronze) reach half of this.
// - AVX512-BF16 VDPBF16PS: 16 lanes x 2 bf16 products x 2 FLOP = 64 per instruction; Zen 4 issues
//   one per cycle (twice the MACs of its FP32 FMA, errata-2026-12.md; pub. 57647): 64. Intel: 128
//   assumed (dispatched to the two FMA ports like VFMADD, not confirmed by a measurement here).
// - AMX TDPBF16PS: 16 x 16 x 32 MACs = 16384 FLOP every 16 cycles per core (Intel optimization
//   manual, "Intel AMX": TDPBF16PS throughput 16 cycles): 1024.
double documented_flops_per_cycle(Isa isa, const CpuFeatures& f) {
  const bool zen5 = f.amd && f.family >= 0x1A;
  switch (isa) {
    case Isa::kAmx:
      return 1024.0;
    case Isa::kAvx512Bf16:
      return f.amd ? (zen5 ? 128.0 : 64.0) : 128.0;
    case Isa::kAvx512:
      return f.amd ? (zen5 ? 64.0 : 32.0) : 64.0;
    case Isa::kAvx2:
      return 32.0;
    case Isa::kNone:
      break;
  }
  return 0.0;
}

/// 16 dependent 1-cycle adds per iteration (the loop counter runs beside them on another ALU):
/// returns the cycles the chain took.
double clock_loop(long iters) {
  uint64_t x = 0;
  for (long i = 0; i < iters; ++i) {
    asm volatile(
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
        : "+r"(x));
  }
  asm volatile("" : : "r"(x));
  return 16.0 * static_cast<double>(iters);
}

struct ProbeLoop {
  double (*loop)(long);
  long iters;
};

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

/// Best of 28 timed runs of iters / 4 iterations of `loop` on every thread (after a short
/// warm-up): on a shared host a ~1-2 ms run is far likelier to run undisturbed than a long one.
double best_of_runs_tflops(double (*loop)(long), long iters, int threads) {
  PinScope pin;
  const ProbeLoop probe = {loop, iters};
  run_probe_on_threads(probe, threads, iters / 10);  // warm-up
  double best = 0.0;
  for (int rep = 0; rep < 28; ++rep) {
    const double t0 = now_seconds();
    const double flops = run_probe_on_threads(probe, threads, iters / 4);
    best = std::max(best, flops / (now_seconds() - t0) * 1e-12);
  }
  return best;
}

}  // namespace

MatmulProbe best_matmul_probe() {
  const Isa isa = effective_isa();
  const double doc = documented_flops_per_cycle(isa, cpu_features());
  // Iterations for ~5-10 ms at ~3 GHz: 4 TDPBF16PS (64 cycles), 12 zmm or ymm ops (6-12 cycles).
  switch (isa) {
    case Isa::kAmx:
      return {"amx_bf16", detail::peak_loop_amx, 200000, doc};
    case Isa::kAvx512Bf16:
      return {"avx512_bf16", detail::peak_loop_avx512_bf16, 2000000, doc};
    case Isa::kAvx512:
      return {"avx512_fma", detail::peak_loop_avx512, 2000000, doc};
    case Isa::kAvx2:
      return {"avx2_fma", detail::peak_loop_avx2, 3000000, doc};
    case Isa::kNone:
      break;
  }
  return {"scalar", peak_loop_scalar, 20000000, 0.0};
}

double measure_matmul_peak_tflops(int threads) {
  const MatmulProbe probe = best_matmul_probe();
  return best_of_runs_tflops(probe.loop, probe.iters, std::max(1, threads));
}

double run_matmul_probe_tflops(int threads) {
  const MatmulProbe probe = best_matmul_probe();
  return rate_on_threads({probe.loop, probe.iters / 30}, std::max(1, threads));
}

double measure_clock_ghz(int threads) {
  threads = std::max(1, threads);
  PinScope pin;
  std::vector<double> ghz(static_cast<size_t>(threads), 0.0);
  parallel_for(threads, threads, [&](int64_t t, int) {
    clock_loop(100000);  // warm-up, and a frequency ramp
    for (int rep = 0; rep < 7; ++rep) {
      const double t0 = now_seconds();
      const double cycles = clock_loop(300000);  // ~5M cycles, ~2 ms
      ghz[t] = std::max(ghz[t], cycles / (now_seconds() - t0) * 1e-9);
    }
  });
  double sum = 0;
  for (double g : ghz) sum += g;
  return sum / threads;
}

TileGemmCeiling measure_tile_gemm_ceiling(int threads) {
  TileGemmCeiling c;
  if (effective_isa() < Isa::kAvx512Bf16) return c;
  threads = std::max(1, threads);
  PinScope pin;
  const bool amx = effective_isa() >= Isa::kAmx;
  const ProbeLoop peak = amx ? ProbeLoop{detail::peak_loop_amx, 200000 / 15}  // ~2 ms each
                             : ProbeLoop{detail::peak_loop_avx512_bf16, 600000};
  const ProbeLoop gemm = amx ? ProbeLoop{detail::tile_gemm_loop_amx, 10000 / 15}
                             : ProbeLoop{detail::tile_gemm_loop_avx512bf16, 100};
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

}  // namespace openmla::probes
