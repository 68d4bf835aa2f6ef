"""The lightning indexer (DeepSeek V3.2 / V4 sparse-attention top-k) with DeepGEMM's Python API.

    logits = openmla.fp8_mqa_logits(q, (k, k_scale), weights, ks, ke)          # prefill
    meta = openmla.get_paged_mqa_logits_metadata(context_lens, 64, 0)
    logits = openmla.fp8_paged_mqa_logits(q, kv_cache, weights, context_lens,   # decode
                                          block_tables, meta, max_context_len)
    indices, lengths = openmla.indexer_topk(logits, 512, None, ends)
    indices, lengths = openmla.paged_indexer_topk(q, kv_cache, weights,        # fused decode
                                                  context_lens, block_tables, 512)

Names, argument order and defaults of `fp8_mqa_logits`, `fp8_paged_mqa_logits` and
`get_paged_mqa_logits_metadata` are DeepGEMM's. Differences: logits a row does not see are
always -inf (`clean_logits` is accepted and has no effect: DeepGEMM leaves them unspecified when
False); the schedule metadata is a placeholder that is accepted and ignored (CPU threads split
the work themselves); `q` may also be DeepGEMM's newer `(q, None)` pair. The paged cache is the
132-byte FP8 format (V3.2, vLLM) or the 68-byte FP4 e2m1 format (V4), told apart by its last
dimension. Cache writers: `indexer_k_quant_and_cache` (vLLM's signature), `indexer_write_keys`.
"""

import numpy as np

from . import _openmla as _C
from ._arrays import Family, _torch, is_torch, native

_FORMATS = {"fp8": _C.IndexerKeyFormat.FP8, "fp4": _C.IndexerKeyFormat.FP4}
_BYTES_TO_FORMAT = {132: _C.IndexerKeyFormat.FP8, 68: _C.IndexerKeyFormat.FP4}


def _format(format):
    """IndexerKeyFormat from an enum value or "fp8" / "fp4"."""
    if isinstance(format, _C.IndexerKeyFormat):
        return format
    try:
        return _FORMATS[str(format).lower()]
    except KeyError:
        raise ValueError(f"format: expected 'fp8' or 'fp4', got {format!r}") from None


def _cache_format(kv_cache, format):
    """The format argument, or the one the cache's last dimension (132 or 68 bytes) names."""
    if format is not None:
        return _format(format)
    last = int(kv_cache.shape[-1])
    if last not in _BYTES_TO_FORMAT:
        raise ValueError(f"kv_cache: last dimension must be 132 (fp8) or 68 (fp4) bytes per "
                         f"token, got shape {tuple(kv_cache.shape)}")
    return _BYTES_TO_FORMAT[last]


def _four_dim_cache(kv_cache):
    """vLLM's [num_blocks, block_size, bytes] cache as [num_blocks, block_size, 1, bytes]."""
    if len(kv_cache.shape) != 3:
        return kv_cache
    return kv_cache.unsqueeze(2) if is_torch(kv_cache) else kv_cache[:, :, None, :]


def _fp8_q(q):
    """DeepGEMM's q: a tensor, or the (q, None) pair of `fp8_fp4_*` (FP4 q is not supported)."""
    if isinstance(q, tuple):
        if len(q) != 2 or q[1] is not None:
            raise NotImplementedError("q: only FP8 q is supported (pass q or (q, None))")
        return q[0]
    return q


def _flat_scales(k_scale):
    """k_scale [N] or [N, 1] as [N]."""
    if len(k_scale.shape) == 2 and int(k_scale.shape[1]) == 1:
        return k_scale[:, 0]
    return k_scale


class PagedMqaLogitsMetadata:
    """Placeholder for DeepGEMM's schedule metadata: accepted by `fp8_paged_mqa_logits` and
    ignored. Keeps the arguments for inspection."""

    def __init__(self, context_lens, block_kv, num_sms):
        self.context_lens_shape = tuple(int(s) for s in context_lens.shape)
        self.block_kv = int(block_kv)
        self.num_sms = int(num_sms)

    def __repr__(self):
        return (f"PagedMqaLogitsMetadata(context_lens_shape={self.context_lens_shape}, "
                f"block_kv={self.block_kv}, num_sms={self.num_sms})")


def get_paged_mqa_logits_metadata(context_lens, block_kv, num_sms):
    """DeepGEMM's name; returns a placeholder that `fp8_paged_mqa_logits` ignores."""
    return PagedMqaLogitsMetadata(context_lens, block_kv, num_sms)


def fp8_mqa_logits(q, kv, weights, cu_seq_len_k_start, cu_seq_len_k_end, clean_logits=True, *,
                   out=None, plan=None, num_threads=0):
    """Prefill logits [M, N] f32: logit[m, s] = sum_h weights[m, h] * ReLU(q[m, h] . k[s]) *
    k_scale[s] for s in [ks[m], ke[m]), -inf elsewhere.

    q [M, H, 128] e4m3, kv = (k [N, 128] e4m3, k_scale [N] f32), weights [M, H] f32,
    cu_seq_len_k_start / cu_seq_len_k_end [M] int32. `clean_logits` has no effect (always clean).
    """
    q = _fp8_q(q)
    k, k_scale = kv
    if out is None:
        out = Family(q).empty((q.shape[0], k.shape[0]), "float32")
    _C.mqa_logits(native(q), native(k), native(_flat_scales(k_scale)), native(weights),
                  native(cu_seq_len_k_start), native(cu_seq_len_k_end), native(out), plan=plan,
                  num_threads=num_threads)
    return out


def fp8_paged_mqa_logits(q, kv_cache, weights, context_lens, block_tables, schedule_meta,
                         max_context_len, clean_logits=False, *, format=None, out=None,
                         plan=None, num_threads=0):
    """Decode logits [B * next_n, max_context_len] f32 over the paged indexer cache.

    q [B, next_n, H, 128] e4m3; kv_cache [num_blocks, block_kv, 1, 132 or 68] uint8 (or vLLM's
    3-D view); weights [B * next_n, H] f32; context_lens [B] int32 (row j of request b sees
    context_lens[b] - next_n + 1 + j tokens) or [B, next_n] (each row's own length);
    block_tables [B, max_blocks] int32. `schedule_meta` and `clean_logits` are ignored.
    """
    q = _fp8_q(q)
    kv_cache = _four_dim_cache(kv_cache)
    fmt = _cache_format(kv_cache, format)
    if out is None:
        rows = int(q.shape[0]) * int(q.shape[1])
        out = Family(q).empty((rows, int(max_context_len)), "float32")
    _C.paged_mqa_logits(native(q), native(kv_cache), fmt, native(weights), native(context_lens),
                        native(block_tables), native(out), plan=plan, num_threads=num_threads)
    return out


def indexer_topk(logits, topk, starts, ends, block_table=None, page_size=64, next_n=1, *,
                 indices=None, topk_length=None, num_threads=0):
    """Top-`topk` of each logits row over its visible keys [starts[r], ends[r]) (starts None: 0).

    Returns (indices [rows, topk] int32, topk_length [rows] int32). indices are positions
    relative to starts[r], ascending, -1 past topk_length[r] = min(topk, visible); ties go to the
    lower position. With `block_table` [batch, max_blocks] (rows = batch * next_n) they become
    physical slots block_table[r // next_n, p // page_size] * page_size + p % page_size, the
    encoding `flash_mla_with_kvcache` takes as `indices`.
    """
    family = Family(logits)
    rows = int(logits.shape[0])
    if indices is None:
        indices = family.empty((rows, int(topk)), "int32")
    if topk_length is None:
        topk_length = family.empty((rows,), "int32")
    _C.indexer_topk(native(logits), native(starts), native(ends), native(block_table),
                    int(page_size), int(next_n), native(indices), native(topk_length),
                    num_threads=num_threads)
    return indices, topk_length


def paged_indexer_topk(q, kv_cache, weights, context_lens, block_tables, topk, *,
                       out_block_table=None, out_page_size=0, format=None, indices=None,
                       topk_length=None, plan=None, num_threads=0):
    """Fused `fp8_paged_mqa_logits` + `indexer_topk` through `block_tables` (no logits matrix).

    Returns (indices [B, next_n, topk] int32, topk_length [B, next_n] int32): physical slots of
    the selected keys in the cache `out_block_table` / `out_page_size` describe (default: the
    indexer cache's own block table and page size), ascending, -1 past topk_length.
    """
    q = _fp8_q(q)
    kv_cache = _four_dim_cache(kv_cache)
    fmt = _cache_format(kv_cache, format)
    family = Family(q)
    batch, next_n = int(q.shape[0]), int(q.shape[1])
    if indices is None:
        indices = family.empty((batch, next_n, int(topk)), "int32")
    if topk_length is None:
        topk_length = family.empty((batch, next_n), "int32")
    _C.paged_indexer_topk(native(q), native(kv_cache), fmt, native(weights),
                          native(context_lens), native(block_tables), native(out_block_table),
                          int(out_page_size), native(indices), native(topk_length), plan=plan,
                          num_threads=num_threads)
    return indices, topk_length


# ---- the key cache


def empty_indexer_cache(num_blocks, block_size, format="fp8", *, like=None, pad_bytes=0):
    """A zeroed cache [num_blocks, block_size, 1, 132 or 68] uint8 whose pages are `pad_bytes`
    longer than their records (padding is never read), in `like`'s array family (NumPy: None)."""
    per_token = _C.indexer_key_bytes_per_token(_format(format))
    page = block_size * per_token + int(pad_bytes)
    buf = Family(like if like is not None else np.empty(0)).empty((num_blocks, page), "uint8",
                                                                  zero=True)
    view = buf[:, : block_size * per_token]
    if is_torch(view):
        return view.unflatten(1, (block_size, 1, per_token))
    return np.lib.stride_tricks.as_strided(view, (num_blocks, block_size, 1, per_token),
                                           (page, per_token, per_token, 1))


def indexer_write_keys(keys, slot_mapping, kv_cache, format=None):
    """Quantises keys [num_tokens, 128] (f32 or bf16) into `kv_cache` at the flat slots
    slot_mapping [num_tokens] (int32 / int64; negative slots are skipped). In place."""
    kv_cache = _four_dim_cache(kv_cache)
    _C.indexer_write_keys(native(keys), native(slot_mapping), _cache_format(kv_cache, format),
                          native(kv_cache))


def indexer_k_quant_and_cache(k, kv_cache, slot_mapping, quant_block_size=128,
                              scale_fmt="ue8m0"):
    """vLLM's `ops.indexer_k_quant_and_cache` (k [T, 128], kv_cache [blocks, block_size, 132],
    slot_mapping [T] int64): FP8 with one power-of-two scale per token."""
    if int(quant_block_size) != 128:
        raise NotImplementedError("quant_block_size: only 128 (one scale per token)")
    if scale_fmt not in ("ue8m0", "ue8m0_fp32"):
        raise NotImplementedError(f"scale_fmt: only power-of-two scales ('ue8m0'), "
                                  f"got {scale_fmt!r}")
    indexer_write_keys(k, slot_mapping, kv_cache, "fp8")


def indexer_quantize_keys(keys, format="fp8"):
    """Keys [N, 128] -> DeepGEMM's non-paged operands: fp8 gives (codes [N, 128] e4m3 for
    PyTorch / uint8 for NumPy, scales [N] f32); fp4 gives (codes [N, 64] uint8, 2 e2m1 per byte,
    scales [N, 4] uint8 ue8m0)."""
    fmt = _format(format)
    family = Family(keys)
    n = int(keys.shape[0])
    fp8 = fmt == _C.IndexerKeyFormat.FP8
    codes = family.empty((n, 128 if fp8 else 64), "uint8")
    scales = family.empty((n,) if fp8 else (n, 4), "float32" if fp8 else "uint8")
    _C.indexer_quantize_keys(native(keys), fmt, native(codes), native(scales))
    if fp8 and family.torch:
        codes = codes.view(_torch().float8_e4m3fn)
    return codes, scales


def indexer_dequantize_cache(kv_cache, format=None):
    """Every token of the cache as f32 keys [num_blocks, block_size, 128] (code times scale)."""
    kv_cache = _four_dim_cache(kv_cache)
    fmt = _cache_format(kv_cache, format)
    out = Family(kv_cache).empty((kv_cache.shape[0], kv_cache.shape[1], 128), "float32")
    _C.indexer_dequantize_cache(native(kv_cache), fmt, native(out))
    return out

