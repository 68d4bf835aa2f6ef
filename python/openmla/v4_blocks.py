"""DeepSeek V4 residual blocks over openmla: mHC (`hc_pre`, `hc_post`, `hc_head`, with the
argument names of DeepSeek V4's inference `model.py` and the split of vLLM's
`hc_pre_fused_cpu` / `hc_post_fused_cpu` / `hc_head_fused_cpu`) and Engram (V4.1:
`engram_hash`, `engram_embed`, `engram_gate`).

Arrays are CPU PyTorch tensors or NumPy arrays (bfloat16 through ml_dtypes), used in place; the
leading dimensions of the residual streams `[..., hc, hidden]` are flattened into tokens with a
view (no copy for dense inputs) and restored on the outputs, which come back in the family of the
first argument or are written into `out=`. The library checks shapes, dtypes and values (see
include/openmla/v4_blocks.h for the formulas).
"""

from . import _openmla as _C
from ._arrays import Family, native


def _tokens_view(x, trailing):
    """`x` as [tokens, *trailing] (a view when the layout allows), and its leading shape."""
    lead = tuple(int(s) for s in x.shape[: x.ndim - len(trailing)])
    if x.ndim == len(trailing) + 1:
        return x, lead
    return x.reshape((-1, *trailing)), lead


def _as(x, shape):
    """`x` reshaped to `shape` unless it already has that many dimensions (reshapes cost
    microseconds per call on the decode path, where these ops run twice per layer)."""
    return x if x.ndim == len(shape) else x.reshape(shape)


def hc_pre(x, hc_fn, hc_scale, hc_base, *, sinkhorn_iters=20, rms_eps=1e-6, hc_eps=1e-6,
           plan=None, num_threads=0, kernel=None):
    """mHC pre-site mixing. x [..., hc, hidden] bfloat16, hc_fn [(2 + hc) * hc, hc * hidden]
    float32, hc_scale [3], hc_base [(2 + hc) * hc] float32. Returns `(y, post, comb)`: y
    [..., hidden] bfloat16 (the collapsed sublayer input), post [..., hc] and comb [..., hc, hc]
    float32 (Sinkhorn-normalised; comb[..., j, k] weights input stream j into output stream k)."""
    hc, hidden = int(x.shape[-2]), int(x.shape[-1])
    flat, lead = _tokens_view(x, (hc, hidden))
    family, tokens = Family(x), int(flat.shape[0])
    y = family.empty((tokens, hidden), "bfloat16")
    post = family.empty((tokens, hc), "float32")
    comb = family.empty((tokens, hc, hc), "float32")
    _C.mhc_pre(native(flat), native(hc_fn), native(hc_scale), native(hc_base), native(y),
               native(post), native(comb), sinkhorn_iters=int(sinkhorn_iters),
               rms_eps=float(rms_eps), hc_eps=float(hc_eps), plan=plan,
               num_threads=num_threads, kernel=kernel)
    if len(lead) == 1:
        return y, post, comb
    return (y.reshape((*lead, hidden)), post.reshape((*lead, hc)),
            comb.reshape((*lead, hc, hc)))


def hc_post(x, residual, post, comb, *, out=None, plan=None, num_threads=0, kernel=None):
    """mHC post-site update: out[..., k, :] = post[..., k] * x + sum_j comb[..., j, k] *
    residual[..., j, :]. x [..., hidden] bfloat16, residual [..., hc, hidden] bfloat16, post
    [..., hc] (or [..., hc, 1]) and comb [..., hc, hc] float32. Returns out [..., hc, hidden]."""
    hc, hidden = int(residual.shape[-2]), int(residual.shape[-1])
    res, lead = _tokens_view(residual, (hc, hidden))
    tokens = int(res.shape[0])
    if out is None:
        out = Family(residual).empty((tokens, hc, hidden), "bfloat16")
    flat_out = _as(out, (tokens, hc, hidden))
    _C.mhc_post(native(_as(x, (tokens, -1))), native(res), native(_as(post, (tokens, -1))),
                native(_as(comb, (tokens, hc, -1))), native(flat_out), plan=plan,
                num_threads=num_threads, kernel=kernel)
    return flat_out if len(lead) == 1 else flat_out.reshape((*lead, hc, hidden))


def hc_head(x, hc_fn, hc_scale, hc_base, *, rms_eps=1e-6, hc_eps=1e-6, plan=None,
            num_threads=0, kernel=None):
    """mHC head collapse: sum_j pre_j x[..., j, :] with pre = sigmoid(mix * hc_scale[0] +
    hc_base) + hc_eps. x [..., hc, hidden] bfloat16, hc_fn [hc, hc * hidden], hc_scale [1],
    hc_base [hc] float32. Returns [..., hidden] bfloat16."""
    hc, hidden = int(x.shape[-2]), int(x.shape[-1])
    flat, lead = _tokens_view(x, (hc, hidden))
    out = Family(x).empty((int(flat.shape[0]), hidden), "bfloat16")
    _C.mhc_head(native(flat), native(hc_fn), native(hc_scale), native(hc_base), native(out),
                rms_eps=float(rms_eps), hc_eps=float(hc_eps), plan=plan,
                num_threads=num_threads, kernel=kernel)
    return out if len(lead) == 1 else out.reshape((*lead, hidden))


def engram_hash(input_ids, multipliers, primes, pad_id, *, dtype="int64", num_threads=0):
    """Engram n-gram hash rows (with the per-table offsets). input_ids [seq] or [batch, seq]
    int64 compressed ids, multipliers [max_ngram] int64, primes [max_ngram - 1, heads] int64.
    Returns [..., seq, (max_ngram - 1) * heads] of `dtype` ("int64" or "int32")."""
    ids = input_ids.reshape((1, -1)) if input_ids.ndim == 1 else input_ids
    cols = (int(multipliers.shape[0]) - 1) * int(primes.shape[1])
    out = Family(input_ids).empty((int(ids.shape[0]), int(ids.shape[1]), cols), dtype)
    _C.engram_hash(native(ids), native(multipliers), native(primes), int(pad_id), native(out),
                   num_threads=num_threads)
    return out.reshape((*input_ids.shape, cols))


def engram_embed(table, hash_ids, *, num_threads=0):
    """Gathers table rows: out[t, c * D:(c + 1) * D] = table[hash_ids[t, c]]. table [rows, D]
    bfloat16 or float32, hash_ids [tokens, cols] int32 / int64. Returns [tokens, cols * D]."""
    tokens, cols, dim = int(hash_ids.shape[0]), int(hash_ids.shape[1]), int(table.shape[1])
    name = str(table.dtype).replace("torch.", "")
    out = Family(table).empty((tokens, cols * dim), name)
    _C.engram_embed(native(table), native(hash_ids), native(out), num_threads=num_threads)
    return out


def engram_gate(h, kv, gate_weight, eps=1e-6, clamp_value=1e-6, *, out=None, plan=None,
                num_threads=0, kernel=None):
    """Engram gate (V4.1): h + sigmoid(signed-sqrt(d)) * value per stream, d the normalised
    match of h_i and key_i weighted by gate_weight (= q_weight * k_weight). h [..., hc, hidden]
    bfloat16, kv [..., (hc + 1) * hidden] bfloat16 (keys, then the value), gate_weight
    [hc, hidden] float32. Returns out [..., hc, hidden] (pass out=h to update in place)."""
    hc, hidden = int(h.shape[-2]), int(h.shape[-1])
    flat, lead = _tokens_view(h, (hc, hidden))
    tokens = int(flat.shape[0])
    if out is None:
        out = Family(h).empty((tokens, hc, hidden), "bfloat16")
    flat_out = _as(out, (tokens, hc, hidden))
    _C.engram_gate(native(flat), native(_as(kv, (tokens, -1))),
                   native(gate_weight), native(flat_out), eps=float(eps),
                   clamp_value=float(clamp_value), plan=plan, num_threads=num_threads,
                   kernel=kernel)
    return flat_out if len(lead) == 1 else flat_out.reshape((*lead, hc, hidden))
