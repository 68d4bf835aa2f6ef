// Machine-limit probes of `openmla bench`: the matmul peak of the best matmul instruction this host
// offers (after OPENMLA_MAX_ISA), the clock it runs at, the AMX tile-GEMM ceiling and the streaming
// bandwidth, so that kernel results read as a fraction of what this machine can do, measured in
// the same run (the VM is noisy: best of several reps, or the median of probes run alongside).
// A CLI concern: libopenmla does not ship these.
#pragma once

namespace openmla::probes {

/// The register-only loop of one matmul instruction.
struct MatmulProbe {
  const char* isa = "scalar";  ///< amx_bf16 | avx512_bf16 | avx512_fma | avx2_fma | scalar
  double (*loop)(long iters) = nullptr;  ///< runs `iters` iterations, returns FLOPs executed
  long iters = 0;                        ///< iterations of one ~5-10 ms measurement
  /// FLOP per cycle per core the vendor documents for this instruction on this host (FP32 FMA =
  /// 2 FLOP per lane; a BF16 dot or tile MAC = 2 FLOP); 0 when not documented (scalar).
  double documented_flops_per_cycle = 0.0;
};

/// The probe of the best matmul instruction the host can run under OPENMLA_MAX_ISA: AMX
/// TDPBF16PS, then AVX512-BF16 VDPBF16PS, AVX-512 FP32 FMA, AVX2 FP32 FMA, scalar.
MatmulProbe best_matmul_probe();

/// Best of 28 short runs of best_matmul_probe() over `threads` pinned threads, in TFLOP/s.
double measure_matmul_peak_tflops(int threads);

/// One short run (~0.3 ms) of best_matmul_probe() on `threads` threads, in TFLOP/s (each thread
/// times its own loop, so waking the threads is not counted). `openmla bench` runs one after every
/// round of kernel calls, so that the peak a fraction refers to was measured while the op ran.
double run_matmul_probe_tflops(int threads);

/// Core clock in GHz: a dependent chain of 1-cycle integer adds timed with steady_clock on each of
/// `threads` pinned threads, best of 7 runs per thread, averaged over the threads.
double measure_clock_ghz(int threads);

/// The decode kernels' own QK^T strip on the MLA decode shape with every operand loaded from L1 /
/// L2 (AMX: 2x2-blocked tiles, peak_probe_amx.cpp; AVX512-BF16 without AMX: vdpbf16ps register
/// tiles, peak_probe_avx512bf16.cpp): the ceiling of the decode kernels' GEMM phases once their
/// data is in cache. 15 pairs of ~2 ms runs, the
/// register-only peak loop then the GEMM, so that each ratio compares runs at the same AMX speed.
struct TileGemmCeiling {
  double tflops = 0.0;        ///< median GEMM rate (0 below AVX512-BF16)
  double frac_of_peak = 0.0;  ///< median of GEMM rate / register-only rate, pair by pair
};
TileGemmCeiling measure_tile_gemm_ceiling(int threads);

/// Best-of-N streaming read bandwidth in GB/s (1e9 B/s) over `threads` pinned threads, reading a
/// 1 GiB buffer (far larger than the LLC) that each thread first-touched itself.
double measure_stream_bandwidth_gbps(int threads);

namespace detail {
/// Per-ISA register-only loops: run `iters` iterations, return FLOPs executed. Each keeps 12
/// independent accumulator chains (4 C tiles for AMX) and nothing else in the loop.
double peak_loop_amx(long iters);
/// `iters` strips of the tile GEMM probe; returns FLOPs executed.
double tile_gemm_loop_amx(long iters);
double peak_loop_avx512_bf16(long iters);
double tile_gemm_loop_avx512bf16(long iters);
double peak_loop_avx512(long iters);
double peak_loop_avx2(long iters);
}  // namespace detail

}  // namespace openmla::probes
