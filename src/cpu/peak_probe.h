// Machine-peak probes used by `openmla bench peak` and to express kernel results as a fraction
// of what this machine can do, measured in the same run (the VM is noisy; best of several reps).
#pragma once

namespace openmla {

/// Best-of-N matmul throughput in TFLOP/s over `threads` pinned threads: an AMX TDPBF16PS
/// register-only loop (4 independent C tiles) when AMX is usable (after OPENMLA_MAX_ISA), else
/// an fp32 FMA register loop (AVX-512, then AVX2), else a scalar FMA loop.
double measure_matmul_peak_tflops(int threads);

/// A plain 2x2-blocked AMX tile GEMM on the MLA decode QK^T shape with every operand tile loaded
/// from L1 / L2 (the sparse-decode kernel's own QK strip, see peak_probe_amx.cpp): the ceiling of
/// the decode kernels' GEMM phases once their data is in cache. 15 pairs of ~2 ms runs, the
/// register-only peak loop then the GEMM, so that each ratio compares runs at the same AMX speed.
struct TileGemmCeiling {
  double tflops = 0.0;        ///< median GEMM rate (0 when AMX is not usable)
  double frac_of_peak = 0.0;  ///< median of GEMM rate / register-only rate, pair by pair
};
TileGemmCeiling measure_tile_gemm_ceiling(int threads);

/// One short run (~1 ms) of the loop measure_matmul_peak_tflops uses, on `threads` threads, in
/// TFLOP/s (each thread times its own loop, so waking the threads is not counted). `openmla bench`
/// runs one after every round of kernel calls, so that the peak a fraction refers to was measured
/// while the op ran.
double run_matmul_probe_tflops(int threads);

/// Best-of-N streaming read bandwidth in GB/s (1e9 B/s) over `threads` pinned threads, reading a
/// 1 GiB buffer (far larger than the LLC) that each thread first-touched itself.
double measure_stream_bandwidth_gbps(int threads);

namespace detail {
/// Per-ISA register-only loops: run `iters` iterations, return FLOPs executed.
double peak_loop_amx(long iters);
/// `iters` strips of the tile GEMM probe; returns FLOPs executed.
double tile_gemm_loop_amx(long iters);
double peak_loop_avx512(long iters);
double peak_loop_avx2(long iters);
}  // namespace detail

}  // namespace openmla
