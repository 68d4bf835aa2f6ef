"""Independent float64 NumPy reference for the tests: FP8 cache encoding/decoding written from the
format description (spec section 4), the three attention ops (section 3), FlashMLA's comparator
and tolerances (section 7), input generators, and PyTorch/NumPy conversions. Nothing here calls
openmla."""

import math
import sys

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)

# (d, d_nope, tile, num_tiles, bytes_per_token) per layout value.
V32, MODEL1 = 1, 2
GEOMETRY = {V32: (576, 512, 128, 4, 656), MODEL1: (512, 448, 64, 7, 584)}

# Spec section 7.2 tolerances: (abs_tol, rel_tol, cos_tol).
TOL_DECODE_OUT = (1e-3, 2.01 / 128, 5e-6)
TOL_DENSE_OUT = (8e-4, 2.01 / 128, 5e-6)
TOL_DECODE_LSE = (1e-6, 8.01 / 65536, 1e-7)
TOL_PREFILL_OUT = (8e-4, 3.01 / 128, 7e-6)
TOL_PREFILL_STAT = (1e-6, 2.01 / 65536, 1e-7)

INVALID_PREFILL = [-2147483648, -123456, -1]  # plus s_kv-relative values added per case


# ---------------------------------------------------------------------------------------------
# PyTorch / NumPy conversions

def torch_or_none():
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    return sys.modules["torch"]


def is_torch(x):
    t = sys.modules.get("torch")
    return t is not None and isinstance(x, t.Tensor)


def to_numpy(x):
    """A NumPy array sharing memory with x (bf16 / e4m3 via ml_dtypes)."""
    if not is_torch(x):
        return x
    torch = sys.modules["torch"]
    if x.dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(BF16)
    if x.dtype == torch.float8_e4m3fn:
        return x.view(torch.uint8).numpy()
    return x.numpy()


def to_family(a, family):
    """A copy of NumPy array `a` in `family` ("numpy" or "torch"), contiguous."""
    a = np.ascontiguousarray(a)
    if family == "numpy":
        return a.copy()
    torch = sys.modules["torch"]
    if a.dtype == BF16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    if a.dtype == E4M3:
        return torch.from_numpy(a.view(np.uint8).copy()).view(torch.float8_e4m3fn)
    return torch.from_numpy(a.copy())


def non_contiguous(x):
    """FlashMLA's non_contiguousify: a copy of x inside a buffer whose last dim is 128 larger
    and every other dim 1 larger, so every stride is unusual but the last dim stays contiguous."""
    shape = tuple(x.shape)
    big = tuple(n + 1 for n in shape[:-1]) + (shape[-1] + 128,)
    index = tuple(slice(0, n) for n in shape)
    if is_torch(x):
        torch = sys.modules["torch"]
        buf = torch.empty(big, dtype=x.dtype)
        view = buf[index]
        view.copy_(x)
        return view
    buf = np.empty(big, dtype=x.dtype)
    view = buf[index]
    view[...] = x
    return view


def f64(x):
    return np.asarray(to_numpy(x)).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Comparator (spec 7.1)

def check_close(name, ans, ref, tol):
    """FlashMLA's check_is_allclose: equal +inf/-inf/NaN positions, then per element
    abs < abs_tol or rel < rel_tol, then the cosine test."""
    abs_tol, rel_tol, cos_tol = tol
    a = np.asarray(ans, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    assert a.shape == r.shape, f"{name}: shape {a.shape} != {r.shape}"
    for kind, mask_fn in (("+inf", lambda t: np.isposinf(t)), ("-inf", lambda t: np.isneginf(t)),
                          ("nan", np.isnan)):
        ma, mr = mask_fn(a), mask_fn(r)
        assert np.array_equal(ma, mr), (
            f"{name}: {kind} positions differ: answer {np.argwhere(ma)[:5].tolist()} "
            f"reference {np.argwhere(mr)[:5].tolist()}")
    special = ~np.isfinite(a)
    a = np.where(special, 0.0, a)
    r = np.where(special, 0.0, r)
    abs_err = np.abs(a - r)
    rel_err = abs_err / (np.abs(r) + 1e-6)
    bad = ~((abs_err < abs_tol) | (rel_err < rel_tol))
    assert not bad.any(), (
        f"{name}: {int(bad.sum())} elements out of tolerance, e.g. at "
        f"{np.argwhere(bad)[0].tolist()}: answer {a[bad][0]!r} reference {r[bad][0]!r}")
    denom = float(np.sum(a * a + r * r))
    cos_diff = 0.0 if float(np.sum(r * r)) < 1e-12 else 1.0 - 2.0 * float(np.sum(a * r)) / denom
    assert cos_diff <= cos_tol, f"{name}: cosine difference {cos_diff} > {cos_tol}"


def bf16_round(x):
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(BF16).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# FP8 cache formats (spec 4), written from the description

def ue8m0_scale(amax):
    """2^ceil(log2(max(amax / 448, 1e-4))) in fp32 arithmetic; NaN stays NaN."""
    s = (np.asarray(amax, np.float32) / np.float32(448.0)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        s = np.where(np.isnan(s), s, np.maximum(s, np.float32(1e-4)))
        return np.exp2(np.ceil(np.log2(s))).astype(np.float32)


def encode_tokens(latents, layout):
    """Per-token encoding of bf16 latents [n, d]: (records [n, record_bytes], scale bytes).
    V32: 656-byte records with fp32 scales inline; MODEL1: 576-byte records + [n, 8] scales."""
    d, d_nope, tile, num_tiles, _ = GEOMETRY[layout]
    x = np.asarray(latents, dtype=BF16).reshape(-1, d)
    n = x.shape[0]
    x32 = x.astype(np.float32)
    nope = x32[:, :d_nope].reshape(n, num_tiles, tile)
    with np.errstate(invalid="ignore"):
        amax = np.max(np.abs(nope), axis=-1)  # NaN propagates
    scales = ue8m0_scale(amax)  # [n, num_tiles]
    with np.errstate(invalid="ignore", divide="ignore"):
        codes = (nope / scales[:, :, None]).astype(np.float32).astype(E4M3).view(np.uint8)
    codes = codes.reshape(n, d_nope)
    rope = x[:, d_nope:].view(np.uint8).reshape(n, -1)
    if layout == V32:
        scale_bytes = scales.astype("<f4").view(np.uint8).reshape(n, 16)
        return np.concatenate([codes, scale_bytes, rope], axis=1), None
    with np.errstate(invalid="ignore"):
        exps = np.where(np.isnan(scales), 255, np.log2(np.where(np.isnan(scales), 1, scales)) + 127)
    scale_rec = np.zeros((n, 8), np.uint8)
    scale_rec[:, :7] = exps.astype(np.uint8)
    return np.concatenate([codes, rope], axis=1), scale_rec


def encode_cache(latents, layout):
    """The bytes of a whole cache [num_blocks, P, 1, d] as pages: (page bytes [num_blocks,
    page_used_bytes]), i.e. what the view [.., P, 1, bytes_per_token] covers."""
    nb, P = latents.shape[0], latents.shape[1]
    rec, scl = encode_tokens(np.asarray(latents).reshape(nb * P, -1), layout)
    if layout == V32:
        return rec.reshape(nb, P * 656)
    return np.concatenate([rec.reshape(nb, P * 576), scl.reshape(nb, P * 8)], axis=1)


def cache_pages(cache):
    """Page bytes [num_blocks, P * bytes_per_token] of an FP8 cache view (torch or NumPy)."""
    c = to_numpy(cache)
    c = c.view(np.uint8) if c.dtype != np.uint8 else c
    nb, P, _, bpt = c.shape
    base = np.lib.stride_tricks.as_strided(c, shape=(nb, P * bpt), strides=(c.strides[0], 1))
    return np.array(base)


def decode_cache(cache, layout):
    """Dequantised keys float64 [num_blocks, P, d] of an FP8 cache view: e4m3 x scale rounded to
    bf16 (exact for the power-of-two scales), RoPE as stored."""
    d, d_nope, tile, num_tiles, _ = GEOMETRY[layout]
    pages = cache_pages(cache)
    nb = pages.shape[0]
    P = to_numpy(cache).shape[1]
    if layout == V32:
        rec = pages.reshape(nb, P, 656)
        codes = rec[:, :, :512]
        scales = np.ascontiguousarray(rec[:, :, 512:528]).view("<f4").astype(np.float32)
        rope = np.ascontiguousarray(rec[:, :, 528:656]).view(BF16)
    else:
        rec = pages[:, : P * 576].reshape(nb, P, 576)
        codes = rec[:, :, :448]
        sbytes = pages[:, P * 576: P * 584].reshape(nb, P, 8)[:, :, :7].astype(np.float64)
        with np.errstate(over="ignore"):
            scales = np.where(sbytes == 255, np.nan, np.exp2(sbytes - 127)).astype(np.float32)
        rope = np.ascontiguousarray(rec[:, :, 448:576]).view(BF16)
    vals = np.ascontiguousarray(codes).view(E4M3).astype(np.float32).reshape(nb, P, num_tiles, tile)
    with np.errstate(invalid="ignore", over="ignore"):
        nope = (vals * scales[:, :, :, None]).astype(BF16).reshape(nb, P, d_nope)
    return np.concatenate([nope.astype(np.float64), rope.astype(np.float64)], axis=-1)


# ---------------------------------------------------------------------------------------------
# Attention references (spec 3)

def _attend(qrow, keys, scale, d_v, sink):
    """One query row over keys [T, d] (float64). Returns (out [d_v], lse, max_logit)."""
    if keys.shape[0] == 0:
        return np.zeros(d_v), math.inf, -math.inf
    s = keys @ qrow * scale
    m = float(np.max(s))
    p = np.exp(s - m)
    total = float(np.sum(p))
    lse = math.log(total) + m
    out = (p / total) @ keys[:, :d_v]
    if sink is not None:
        out = out / (1.0 + math.exp(sink - lse)) if sink != math.inf else out * 0.0
    return out, lse, m


def sparse_decode_ref(q, cache_keys, indices, topk_length=None, attn_sink=None,
                      extra_keys=None, extra_indices=None, extra_topk_length=None,
                      scale=None, d_v=512):
    """q [b, s_q, h, d] f64; cache_keys [num_slots, d] f64 (dequantised, flat slots);
    indices [b, s_q, topk]. Returns out [b, s_q, h, d_v] (f64) and lse [b, h, s_q]."""
    b, s_q, h, d = q.shape
    scale = d ** -0.5 if scale is None else scale
    out = np.zeros((b, s_q, h, d_v))
    lse = np.zeros((b, h, s_q))
    for bi in range(b):
        for si in range(s_q):
            rows = []
            for keys, idx, lens in ((cache_keys, indices, topk_length),
                                    (extra_keys, extra_indices, extra_topk_length)):
                if keys is None:
                    continue
                row = np.asarray(idx[bi, si]).astype(np.int64)
                n = row.shape[0] if lens is None else int(lens[bi])
                row = row[:n]
                row = row[(row >= 0) & (row < keys.shape[0])]
                rows.append(keys[row])
            keys = np.concatenate(rows, axis=0)
            for hi in range(h):
                sink = None if attn_sink is None else float(attn_sink[hi])
                o, l, _ = _attend(q[bi, si, hi], keys, scale, d_v, sink)
                out[bi, si, hi] = o
                lse[bi, hi, si] = l
    return out, lse


def dense_decode_ref(q, cache, block_table, seqlens, causal=False, scale=None, d_v=512):
    """q [b, s_q, h_q, d]; cache [num_blocks, P, h_k, d] f64. Returns out, lse [b, h_q, s_q]."""
    b, s_q, h_q, d = q.shape
    P, h_k = cache.shape[1], cache.shape[2]
    scale = d ** -0.5 if scale is None else scale
    group = h_q // h_k
    out = np.zeros((b, s_q, h_q, d_v))
    lse = np.zeros((b, h_q, s_q))
    for bi in range(b):
        L = int(seqlens[bi])
        tok = np.arange(L)
        blocks = np.asarray(block_table[bi])[tok // P].astype(np.int64) if L else tok
        keys_all = cache[blocks, tok % P] if L else np.zeros((0, h_k, d))  # [L, h_k, d]
        for si in range(s_q):
            visible = L - (s_q - 1 - si) if (causal and s_q > 1) else L
            visible = max(visible, 0)
            for hi in range(h_q):
                o, l, _ = _attend(q[bi, si, hi], keys_all[:visible, hi // group], scale, d_v, None)
                out[bi, si, hi] = o
                lse[bi, hi, si] = l
    return out, lse


def sparse_prefill_ref(q, kv, indices, scale, topk_length=None, attn_sink=None, d_v=512):
    """q [s_q, h_q, d], kv [s_kv, h_kv, d] f64, indices [s_q, h_kv, topk].
    Returns out [s_q, h_q, d_v], max_logits [s_q, h_q], lse [s_q, h_q]."""
    s_q, h_q, d = q.shape
    s_kv, h_kv = kv.shape[0], kv.shape[1]
    group = h_q // h_kv
    out = np.zeros((s_q, h_q, d_v))
    mx = np.zeros((s_q, h_q))
    lse = np.zeros((s_q, h_q))
    for si in range(s_q):
        for g in range(h_kv):
            row = np.asarray(indices[si, g]).astype(np.int64)
            n = row.shape[0] if topk_length is None else int(topk_length[si])
            row = row[:n]
            row = row[(row >= 0) & (row < s_kv)]
            keys = kv[row, g]
            for hi in range(g * group, (g + 1) * group):
                sink = None if attn_sink is None else float(attn_sink[hi])
                o, l, m = _attend(q[si, hi], keys, scale, d_v, sink)
                out[si, hi], lse[si, hi], mx[si, hi] = o, l, m
    return out, mx, lse


# ---------------------------------------------------------------------------------------------
# Input generation (spec 7.3 style)

def randn_bf16(rng, shape, scale=1.0, clamp=None):
    x = rng.standard_normal(shape) * scale
    if clamp is not None:
        x = np.clip(x, -clamp, clamp)
    return x.astype(np.float32).astype(BF16)


def randperm_rows(rng, rows, range_i, k, pads):
    """Per row, k distinct values from [0, range_i) in random order; when range_i < k the
    surplus slots hold values drawn from `pads`."""
    out = np.empty((rows, k), np.int64)
    for r in range(rows):
        n = min(k, range_i)
        vals = rng.permutation(range_i)[:n]
        extra = rng.choice(np.asarray(pads, np.int64), size=k - n) if k > n else np.empty(0, np.int64)
        row = np.concatenate([vals, extra])
        out[r] = rng.permutation(row)
    return out


def sink_values(rng, h):
    """randn with about a third +inf and a third -inf."""
    s = rng.standard_normal(h).astype(np.float32)
    u = rng.random(h)
    s[u < 0.31] = np.inf
    s[(u >= 0.31) & (u < 0.62)] = -np.inf
    return s
