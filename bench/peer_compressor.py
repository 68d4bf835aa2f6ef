"""openmla's KV compressor vs vLLM's CPU compressor ops, side by side in one process (a benchmark,
not a test).

    python3 bench/peer_compressor.py [--threads 2] [--reps 30] [--tokens 1,16,256] [--json]

V4-Flash shapes: CSA (ratio 4, state width 2 x 512, window 8) and HCA (ratio 128, width 512,
window 128). Each of T tokens belongs to its own sequence and sits at a window boundary, so every
token emits a compressed entry (the heaviest decode step). Timed per op: `save_partial_states`
(T state rows) and `compress_norm_rope_store` (T pooled entries into a MODEL1 cache), the median
over --reps calls, interleaving the implementations call by call. Bytes per call are those the
op must touch (save: a, z read and the state row written; store: the window's a and z halves
read, 584 B written per entry); GB/s is divided by the copy bandwidth measured in the same run
(a 256 MiB torch copy with the same threads, or a NumPy copy without torch).

vLLM's ops are used when `import vllm` works and its CPU library loads on this CPU (probed in a
subprocess, since vLLM's `_C.abi3.so` can be built for instructions the host lacks); otherwise
only openmla is timed and the vLLM columns say why."""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# Torch's OpenMP workers spin after each call by default and would steal the cores openmla's
# threads are timed on (vLLM's ops then took milliseconds for 16 tokens); let them sleep, for both
# sides alike, as bench/peer_v4_blocks.py does.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import openmla  # noqa: E402

D = 512


def vllm_ops():
    try:
        import torch
        import vllm
    except Exception as e:  # noqa: BLE001
        return None, f"vllm not importable ({type(e).__name__})"
    lib = os.path.join(os.path.dirname(vllm.__file__), "_C.abi3.so")
    probe = ("import torch,sys; torch.ops.load_library(sys.argv[1]); "
             "torch.ops._C.compress_norm_rope_store_cpu")
    r = subprocess.run([sys.executable, "-c", probe, lib], capture_output=True)
    if r.returncode != 0:
        why = " (SIGILL: built for instructions this CPU lacks)" if r.returncode == -4 else ""
        return None, f"vLLM's _C.abi3.so does not load here (exit {r.returncode}{why})"
    torch.ops.load_library(lib)
    return torch.ops._C, ""


def copy_bandwidth(threads):
    """GB/s of a 256 MiB copy (read + write), best of 5."""
    n = 64 << 20
    try:
        import torch

        torch.set_num_threads(threads)
        src, dst = torch.ones(n), torch.empty(n)
        copy = lambda: dst.copy_(src)  # noqa: E731
    except ImportError:
        src, dst = np.ones(n, np.float32), np.empty(n, np.float32)
        copy = lambda: np.copyto(dst, src)  # noqa: E731
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        copy()
        best = min(best, time.perf_counter() - t)
    return 2 * 4 * n / best / 1e9


class Problem:
    def __init__(self, ratio, tokens, torch_arrays):
        rng = np.random.default_rng(0)
        coff = 2 if ratio == 4 else 1
        self.ratio, self.tokens, self.width, self.window = ratio, tokens, coff * D, coff * ratio
        bs = 4 if ratio == 4 else 8  # vLLM's state block sizes
        blocks_per_seq = -(-self.window // bs)
        self.pos = np.full(tokens, 2 * self.window - 1, np.int64)  # a boundary, full window
        table = np.arange(tokens * 2 * blocks_per_seq).reshape(tokens, -1)
        seq = np.arange(tokens)
        self.slots = (table[seq, self.pos // bs] * bs + self.pos % bs).astype(np.int64)
        state = rng.standard_normal((tokens * 2 * blocks_per_seq, bs, 2 * self.width))
        self.state = state.astype(np.float32)
        self.a = rng.standard_normal((tokens, self.width)).astype(np.float32)
        self.z = rng.standard_normal((tokens, self.width)).astype(np.float32)
        self.ape = rng.standard_normal((ratio, self.width)).astype(np.float32)
        self.weight = np.ones(D, np.float32)
        self.cos_sin = openmla.compressor_rope_cache(int(self.pos.max()) + 1)
        self.gather = openmla.compressor_gather_slots(self.pos, seq, table, bs, ratio)
        self.kv_slots = np.arange(tokens, dtype=np.int64)
        page = 64 if ratio == 4 else 2
        page_bytes = -(-584 * page // 576) * 576
        self.page = page
        self.kv = np.zeros((-(-tokens // page), page_bytes), np.uint8)
        self.save_bytes = tokens * 4 * self.width * 4
        self.store_bytes = tokens * (self.window * 2 * D * 4 + 584)
        if torch_arrays:
            import torch

            for k in ("pos", "slots", "state", "a", "z", "ape", "weight", "cos_sin", "gather",
                      "kv_slots", "kv"):
                setattr(self, k, torch.from_numpy(np.ascontiguousarray(getattr(self, k))))

    def openmla_calls(self, threads):
        kv4 = openmla.compressor._paged_view(self.kv, self.page)
        plan = openmla.Plan()
        return {
            "save": lambda: openmla.save_partial_states(self.a, self.z, self.ape, self.pos,
                                                        self.state, self.slots,
                                                        num_threads=threads),
            "store": lambda: openmla.compress_norm_rope_store(
                self.state, self.gather, self.pos, self.kv_slots, self.weight, 1e-6,
                self.cos_sin, kv4, compress_ratio=self.ratio, plan=plan, num_threads=threads),
        }

    def vllm_calls(self, ops):
        return {
            "save": lambda: ops.save_partial_states_cpu(self.a, self.z, self.ape, self.pos,
                                                        self.state, self.slots),
            "store": lambda: ops.compress_norm_rope_store_cpu(
                self.state, self.gather, self.pos, self.kv_slots, self.weight, 1e-6,
                self.cos_sin, self.kv, self.page, self.ratio),
        }


def median_us(calls, reps):
    """Interleaves the implementations call by call; median µs of each."""
    times = {k: [] for k in calls}
    for fn in calls.values():
        fn()
    for _ in range(reps):
        for k, fn in calls.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v) * 1e6) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--tokens", default="1,16,256")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ops, why = vllm_ops()
    if ops is not None:
        import torch

        torch.set_num_threads(args.threads)
    bw_before = copy_bandwidth(args.threads)
    rows = []
    for ratio in (4, 128):
        for tokens in (int(t) for t in args.tokens.split(",")):
            p = Problem(ratio, tokens, ops is not None)
            for op in ("save", "store"):
                calls = {"openmla": p.openmla_calls(args.threads)[op]}
                if ops is not None:
                    calls["vllm"] = p.vllm_calls(ops)[op]
                us = median_us(calls, args.reps)
                nbytes = p.save_bytes if op == "save" else p.store_bytes
                rows.append(dict(ratio=ratio, tokens=tokens, op=op, us=us, bytes=nbytes))
    bw = max(bw_before, copy_bandwidth(args.threads))
    for r in rows:
        r["gbps"] = {k: r["bytes"] / v / 1e3 for k, v in r["us"].items()}
        r["bw_fraction"] = {k: g / bw for k, g in r["gbps"].items()}
        if "vllm" in r["us"]:
            r["vllm_over_openmla"] = r["us"]["vllm"] / r["us"]["openmla"]
    if args.json:
        print(json.dumps(dict(threads=args.threads, copy_gbps=bw, vllm=why or "loaded",
                              rows=rows), indent=1))
        return
    print(f"threads {args.threads}, copy bandwidth {bw:.1f} GB/s, vLLM: {why or 'loaded'}")
    print(f"{'ratio':>5} {'T':>4} {'op':>5} {'openmla us':>11} {'GB/s':>6} {'frac':>5} "
          f"{'vllm us':>9} {'vllm/ours':>9}")
    for r in rows:
        v = r["us"].get("vllm")
        peer = f"{v:9.1f} {r['vllm_over_openmla']:9.2f}" if v else f"{'-':>9} {'-':>9}"
        print(f"{r['ratio']:>5} {r['tokens']:>4} {r['op']:>5} {r['us']['openmla']:>11.1f} "
              f"{r['gbps']['openmla']:>6.1f} {r['bw_fraction']['openmla']:>5.2f} {peer}")

if __name__ == "__main__":
    main()
