#!/usr/bin/env python3
"""CLI contract test: `openmla bench ... --json` prints one JSON object per kernel with the keys
the issues name, consistent numbers, and honours --impl (several kernels, alternated) and
--layers. Tiny shapes; run by CTest as cli.bench_json.

    python3 tests/cli/check_bench_json.py path/to/openmla
"""
import json
import math
import subprocess
import sys

COMMON = ["--threads", "1", "--iters", "2", "--warmup", "1", "--json"]
SHAPE_KEYS = {
    "sparse_decode": ["model", "batch", "seq_q", "heads_q", "topk", "extra_topk", "page_size"],
    "dense_decode": ["format", "batch", "seq_q", "heads_q", "heads_kv", "cache_tokens", "topk"],
    "sparse_prefill": ["format", "batch", "seq_q", "heads_q", "heads_kv", "seq_kv", "topk"],
    "compressor": ["ratio", "head_dim", "cache", "prefill", "tokens", "entries", "page_size"],
    "mhc_pre": ["stage", "tokens", "hidden", "streams", "sinkhorn_iters"],
    "mhc_post": ["stage", "tokens", "hidden", "streams"],
    "mhc_head": ["stage", "tokens", "hidden", "streams"],
    "engram_gate": ["stage", "tokens", "hidden", "streams"],
    "engram_hash": ["stage", "tokens", "orders", "heads"],
    "engram_embed": ["stage", "tokens", "orders", "heads", "dim", "rows"],
}
# Engram's hash and row gather are plain calls, not dispatched ops: the kernel is the op's name.
UNDISPATCHED = {"engram_hash", "engram_embed"}
RESULT_KEYS = ["op", "kernel", "threads", "us", "us_min", "tflops", "gbps", "peak_isa",
               "peak_tflops", "peak_gbps", "frac_of_peak", "layers", "peak_tflops_best", "bound", "frac_of_matmul_peak",
               "frac_of_bandwidth"]
# The matmul instructions the peak probes run, best first (tools/probes/peak_probe.h).
PEAK_ISAS = ["amx_bf16", "avx512_bf16", "avx512_fma", "avx2_fma", "scalar"]


def run(binary, args):
    out = subprocess.run([binary, "bench"] + args, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def check_lines(lines, op, kernels, layers):
    assert len(lines) == len(kernels), (op, lines)
    for line, kernel in zip(lines, kernels):
        for key in SHAPE_KEYS[op] + RESULT_KEYS:
            assert key in line, (op, key, line)
        assert line["op"] == op, line
        if kernel:
            assert line["kernel"] == kernel, (kernel, line)
        if op in UNDISPATCHED:
            assert line["kernel"] == op, line
        else:
            assert line["kernel"].startswith(op + "."), line
        assert line["layers"] == layers, line
        assert line["threads"] == 1, line
        assert 0 < line["us_min"] <= line["us"], line
        assert line["peak_tflops"] > 0 and line["peak_gbps"] > 0, line
        assert line["peak_isa"] in PEAK_ISAS, line
        # peak_tflops comes from the probes between the calls, peak_tflops_best from bench peak's
        # best-of-N probe (both timed, so only their presence is checked).
        assert line["peak_tflops_best"] > 0, line
        frac_matmul = line["tflops"] / line["peak_tflops"]
        frac_bw = line["gbps"] / line["peak_gbps"]
        want = frac_matmul if op == "sparse_decode" else max(frac_matmul, frac_bw)
        # All four numbers carry 6 significant digits, so the printed ratio holds to ~1e-5.
        assert math.isclose(line["frac_of_peak"], want, rel_tol=1e-4), line
        assert line["bound"] in ("memory", "compute"), line
        assert op != "sparse_decode" or line["bound"] == "compute", line


def check_v4_blocks(binary):
    """The V4 block ops on tiny shapes: keys, --impl, --layers and --vs-ref."""
    lines = run(binary, ["compressor", "--ratio", "4", "--tokens", "3", "--cache", "bf16",
                         "--impl", "compressor.ref,", "--vs-ref"] + COMMON)
    check_lines(lines, "compressor", ["compressor.ref", ""], 1)
    assert lines[0]["entries"] == 3 and lines[0]["cache"] == "bf16", lines
    assert all(line["ref_us"] > 0 and line["speedup_vs_ref"] > 0 for line in lines), lines
    lines = run(binary, ["compressor", "--ratio", "128", "--tokens", "130", "--prefill"] + COMMON)
    check_lines(lines, "compressor", [""], 1)
    assert lines[0]["entries"] == 1 and lines[0]["prefill"] is True, lines
    for stage in ["pre", "post", "head"]:
        lines = run(binary, ["mhc", "--stage", stage, "--tokens", "2", "--hidden", "64",
                             "--sinkhorn-iters", "3", "--layers", "2"] + COMMON)
        check_lines(lines, "mhc_" + stage, [""], 2)
        assert lines[0]["stage"] == stage and lines[0]["streams"] == 4, lines
    lines = run(binary, ["engram", "--tokens", "2", "--hidden", "64",
                         "--impl", "engram_gate.ref"] + COMMON)
    check_lines(lines, "engram_gate", ["engram_gate.ref"], 1)
    for stage in ["hash", "embed"]:
        lines = run(binary, ["engram", "--stage", stage, "--tokens", "4", "--rows", "100",
                             "--dim", "16"] + COMMON)
        check_lines(lines, "engram_" + stage, ["engram_" + stage], 1)
        assert lines[0]["tflops"] == 0 and lines[0]["gbps"] > 0, lines


def main():
    binary = sys.argv[1]
    peak = run(binary, ["peak"] + COMMON)
    assert len(peak) == 1 and peak[0]["peak_tflops"] > 0 and peak[0]["peak_gbps"] > 0, peak
    p = peak[0]
    assert p["peak_isa"] in PEAK_ISAS, p
    # The clock and the probe against its documented rate: present and positive (timed, so not
    # bounded: a co-tenant can halve either), 0 only for the undocumented scalar loop.
    assert p["clock_ghz"] > 0, p
    assert (p["documented_flops_per_cycle"] > 0) == (p["peak_isa"] != "scalar"), p
    doc = p["documented_flops_per_cycle"] * p["clock_ghz"] * p["threads"] * 1e-3
    want = p["peak_tflops"] / doc if doc > 0 else 0.0
    assert math.isclose(p["peak_vs_documented"], want, rel_tol=1e-4), p
    # The tile-GEMM ceiling is 0 iff the probes have neither AMX nor AVX512-BF16, else a rate and its ratio to the
    # register-only runs paired with it. No bound between separately timed probes: on a shared
    # machine one probe can run at a quarter of the other's speed.
    gemm, frac = p["tile_gemm_tflops"], p["tile_gemm_frac_of_peak"]
    assert gemm >= 0 and frac >= 0 and (gemm > 0) == (frac > 0), p
    assert (gemm > 0) == (p["peak_isa"] in ("amx_bf16", "avx512_bf16")), p

    lines = run(binary, ["sparse-decode", "--model", "v32", "--batch", "1", "--heads", "16",
                         "--topk", "64", "--cache-tokens", "512", "--impl", "sparse_decode.ref,",
                         "--layers", "2"] + COMMON)
    check_lines(lines, "sparse_decode", ["sparse_decode.ref", ""], 2)
    assert lines[0]["model"] == "v32" and lines[0]["topk"] == 64, lines

    lines = run(binary, ["dense-decode", "--format", "bf16", "--batch", "1", "--heads", "16",
                         "--cache-tokens", "300"] + COMMON)
    check_lines(lines, "dense_decode", [""], 1)
    assert lines[0]["cache_tokens"] == 300 and lines[0]["heads_kv"] == 1, lines

    lines = run(binary, ["sparse-prefill", "--seq-q", "4", "--seq-kv", "256", "--heads", "16",
                         "--topk", "64", "--d-qk", "576", "--impl", ",sparse_prefill.ref"]
                + COMMON)
    check_lines(lines, "sparse_prefill", ["", "sparse_prefill.ref"], 1)
    check_v4_blocks(binary)
    print("bench JSON contract: ok")


if __name__ == "__main__":
    main()
