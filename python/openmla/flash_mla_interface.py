"""FlashMLA's Python interface (`flash_mla.flash_mla_interface`) over openmla.

Same names, argument order, defaults and return layouts as FlashMLA. The arrays may be CPU
PyTorch tensors or NumPy arrays (bfloat16 through ml_dtypes); outputs come back in the family of
`q`, or are written into the arrays passed as `out=` / `lse=` / `max_logits=`. The library checks
shapes, dtypes, strides and values; this module keeps only FlashMLA's interface-level assertions.
"""

import dataclasses
from typing import Any, Optional, Tuple

from . import _openmla as _C
from ._arrays import Family, is_torch, native, shape_of

_SCHED_META_HINT = (
    " The arguments are inconsistent with sched_meta: a FlashMLASchedMeta may only be reused"
    " for calls with the same configuration (e.g. the layers of one decode step)."
)


@dataclasses.dataclass
class FlashMLASchedMeta:
    """Scheduling state of `flash_mla_with_kvcache`, filled by its first call and reused after.

    `config` records the configuration of that first call; later calls must match it (an
    AssertionError says which field differs). On CPU the "schedule" is an openmla Plan (kernel
    choice and work split), kept in `plan`; `tile_scheduler_metadata` and `num_splits` stay None.
    """

    @dataclasses.dataclass
    class Config:
        b: int
        s_q: int
        h_q: int
        page_block_size: int
        h_k: int

        causal: bool
        is_fp8_kvcache: bool
        topk: Optional[int]

        extra_page_block_size: Optional[int]
        extra_topk: Optional[int]

    have_initialized: bool = False
    config: Optional[Config] = None
    tile_scheduler_metadata: Any = None
    num_splits: Any = None
    plan: Any = None
    plan_key: Any = None


def get_mla_metadata(*args, **kwargs) -> Tuple[FlashMLASchedMeta, None]:
    """Returns `(FlashMLASchedMeta(), None)`; the schedule is made by the first
    `flash_mla_with_kvcache` call. Every argument is accepted and ignored, so the older form
    `get_mla_metadata(cache_seqlens, s_q * h_q // h_kv, h_kv, ...)` keeps working; pass the
    second element as `num_splits` (it must be None)."""
    return FlashMLASchedMeta(), None


def _check_config(stored, current):
    for field in dataclasses.fields(stored):
        want, got = getattr(stored, field.name), getattr(current, field.name)
        assert want == got, (
            f"sched_meta.config.{field.name} is {want!r} but this call has {got!r}." + _SCHED_META_HINT
        )


def _plan_for(sched_meta, key):
    """The sched_meta's Plan for calls with this shape key (a fresh one when the key changes)."""
    if sched_meta.plan is None or sched_meta.plan_key != key:
        sched_meta.plan = _C.Plan()
        sched_meta.plan_key = key
    return sched_meta.plan


def _torch_ops(*arrays):
    """`torch.ops.openmla` when every array given is a torch tensor and this torch can register
    the custom ops (openmla.torch_ops), else None: the call then goes to the binding directly.
    Through the custom ops a torch.compile graph holds the call as one op."""
    if not is_torch(arrays[0]) or not all(x is None or is_torch(x) for x in arrays):
        return None
    try:
        from . import torch_ops
    except (ImportError, AttributeError):  # pragma: no cover - torch older than 2.4
        return None
    return torch_ops.ops


def _is_bf16(x):
    """torch.bfloat16 or ml_dtypes' bfloat16."""
    return str(getattr(x, "dtype", "")).endswith("bfloat16")


def _is_fp16(x):
    """torch.float16 or NumPy's float16."""
    return str(getattr(x, "dtype", "")) in ("float16", "torch.float16")


def flash_mla_with_kvcache(
    q,
    k_cache,
    block_table,
    cache_seqlens,
    head_dim_v: int,
    tile_scheduler_metadata: FlashMLASchedMeta,
    num_splits: None = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    is_fp8_kvcache: bool = False,
    indices=None,
    attn_sink=None,
    extra_k_cache=None,
    extra_indices_in_kvcache=None,
    topk_length=None,
    extra_topk_length=None,
    *,
    out=None,
    lse=None,
):
    """Decode attention over a paged KV cache, as FlashMLA's function of the same name.

    With `indices` ([b, s_q, topk] int32 flat cache slots, -1 or any out-of-range value =
    invalid): sparse decode over an FP8 cache (V32: [blocks, page, 1, 656], MODEL1:
    [blocks, page, 1, 584] views as made by `quantize_k_cache`) or, as an openmla extension, a
    bf16 cache; with `attn_sink`, `topk_length`, `extra_k_cache`, `extra_indices_in_kvcache`,
    `extra_topk_length` as in FlashMLA. Without `indices`: dense decode with `block_table` and
    `cache_seqlens` over a cache [blocks, page, h_k, d] of q's dtype (bfloat16 or float16, as
    FlashMLA) or (openmla extension, bfloat16 q) an FP8 cache.

    Returns `(out, lse)`: out [b, s_q, h_q, head_dim_v] bfloat16 (dense decode: q's dtype, so
    float16 for float16 q) and lse [b, h_q, s_q] float32 (sparse: a transposed view of a
    [b, s_q, h_q] buffer, as FlashMLA). Rows with nothing to
    attend get out = 0 and lse = +inf. `out=` / `lse=` (keyword-only) receive the results in
    place instead of new arrays.
    """
    sched_meta = tile_scheduler_metadata
    assert isinstance(sched_meta, FlashMLASchedMeta), (
        "tile_scheduler_metadata must be the FlashMLASchedMeta returned by get_mla_metadata()"
    )
    assert num_splits is None, "num_splits must be None (the second value of get_mla_metadata())"

    sparse = indices is not None
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** (-0.5)
    config = FlashMLASchedMeta.Config(
        b=int(q.shape[0]),
        s_q=int(q.shape[1]),
        h_q=int(q.shape[2]),
        page_block_size=int(k_cache.shape[1]),
        h_k=int(k_cache.shape[2]),
        causal=bool(causal),
        is_fp8_kvcache=bool(is_fp8_kvcache),
        topk=int(indices.shape[-1]) if sparse else None,
        extra_page_block_size=int(extra_k_cache.shape[1]) if extra_k_cache is not None else None,
        extra_topk=(
            int(extra_indices_in_kvcache.shape[-1]) if extra_indices_in_kvcache is not None else None
        ),
    )
    if sched_meta.have_initialized:
        assert sched_meta.config is not None
        _check_config(sched_meta.config, config)

    family = Family(q)
    if sparse:
        assert not causal, "causal must be False for sparse attention (indices given)"
        assert is_fp8_kvcache or _is_bf16(k_cache), (
            "is_fp8_kvcache must be True for sparse attention over an FP8 cache"
        )
        arrays = (q, k_cache, indices, topk_length, attn_sink, extra_k_cache,
                  extra_indices_in_kvcache, extra_topk_length)
        out, lse = _sparse_decode(sched_meta, family, config, arrays,
                                  (float(softmax_scale), int(head_dim_v)), out, lse)
    else:
        assert (
            attn_sink is None
            and extra_k_cache is None
            and extra_indices_in_kvcache is None
            and topk_length is None
            and extra_topk_length is None
        ), (
            "attn_sink, extra_k_cache, extra_indices_in_kvcache, topk_length and "
            "extra_topk_length must be None for dense attention (no indices)"
        )
        assert block_table is not None and cache_seqlens is not None, (
            "block_table and cache_seqlens are required for dense attention (no indices)"
        )
        arrays = (q, k_cache, block_table, cache_seqlens)
        out, lse = _dense_decode(sched_meta, family, config, arrays,
                                 (float(softmax_scale), bool(causal), int(head_dim_v)), out, lse)
    if not sched_meta.have_initialized:
        sched_meta.have_initialized = True
        sched_meta.config = config
    return out, lse


def _sparse_decode(sched_meta, family, config, arrays, scalars, out, lse):
    """Sparse decode of `arrays` (q, k_cache, indices, topk_length, attn_sink, extra_k_cache,
    extra_indices, extra_topk_length) with `scalars` (softmax_scale, head_dim_v): through the
    torch custom ops for torch tensors, else through the binding with sched_meta's plan."""
    b, s_q, h_q, head_dim_v = config.b, config.s_q, config.h_q, scalars[1]
    ops = _torch_ops(*arrays, out, lse)
    if ops is not None and out is None and lse is None:
        return ops.sparse_decode(*arrays, *scalars)
    if out is None:
        out = family.empty((b, s_q, h_q, head_dim_v), "bfloat16")
    if lse is None:
        lse = family.transpose12(family.empty((b, s_q, h_q), "float32"))
    if ops is not None:
        ops.sparse_decode_out(*arrays, *scalars, out, lse)
        return out, lse
    q, k_cache, indices, topk_length, attn_sink, extra_k_cache, extra_indices, extra_lengths = arrays
    plan = _plan_for(sched_meta, ("sparse",) + tuple(shape_of(x) for x in arrays))
    _C.sparse_decode(
        native(q), native(k_cache), native(indices), native(out), native(lse),
        topk_length=native(topk_length),
        attn_sink=native(attn_sink),
        extra_kv_cache=native(extra_k_cache),
        extra_indices=native(extra_indices),
        extra_topk_length=native(extra_lengths),
        softmax_scale=scalars[0],
        head_dim_v=head_dim_v,
        plan=plan,
    )
    return out, lse


def _dense_decode(sched_meta, family, config, arrays, scalars, out, lse):
    """Dense decode of `arrays` (q, k_cache, block_table, cache_seqlens) with `scalars`
    (softmax_scale, causal, head_dim_v), as `_sparse_decode`."""
    b, s_q, h_q, head_dim_v = config.b, config.s_q, config.h_q, scalars[2]
    q = arrays[0]
    ops = _torch_ops(*arrays, out, lse)
    if ops is not None and out is None and lse is None:
        return ops.dense_decode(*arrays, *scalars)
    if out is None:
        out = family.empty((b, s_q, h_q, head_dim_v), "float16" if _is_fp16(q) else "bfloat16")
    if lse is None:
        lse = family.empty((b, h_q, s_q), "float32")
    if ops is not None:
        ops.dense_decode_out(*arrays, *scalars, out, lse)
        return out, lse
    key = ("dense", scalars[1], str(q.dtype)) + tuple(shape_of(x) for x in arrays)
    plan = _plan_for(sched_meta, key)
    _C.dense_decode(
        *(native(x) for x in arrays), native(out), native(lse),
        softmax_scale=scalars[0],
        causal=scalars[1],
        head_dim_v=head_dim_v,
        plan=plan,
    )
    return out, lse


def flash_mla_sparse_fwd(
    q,
    kv,
    indices,
    sm_scale: float,
    d_v: int = 512,
    attn_sink=None,
    topk_length=None,
    indexer_topk: int = 0,
    *,
    out=None,
    max_logits=None,
    lse=None,
):
    """Sparse prefill attention, as FlashMLA's function of the same name.

    q [s_q, h_q, d_qk] bfloat16, kv [s_kv, h_kv, d_qk] bfloat16, indices [s_q, h_kv, topk]
    int32 (valid iff 0 <= index < s_kv), sm_scale required, attn_sink [h_q] float32,
    topk_length [s_q] int32. Returns `(out, max_logits, lse)`: out [s_q, h_q, d_v] bfloat16,
    max_logits and lse [s_q, h_q] float32, natural log; lonely rows get out = 0, lse = +inf and
    max_logits = -inf. With `indexer_topk > 0` a fourth value, lse_indexer [s_q, h_q], is the lse
    over the first `indexer_topk` index slots only (computed by a second pass).
    """
    family = Family(q)
    arrays = (q, kv, indices, topk_length, attn_sink)
    scalars = (float(sm_scale), int(d_v))
    ops = _torch_ops(*arrays, out, max_logits, lse)
    if ops is not None and out is None and max_logits is None and lse is None:
        out, max_logits, lse = ops.sparse_prefill(*arrays, *scalars)
    else:
        out, max_logits, lse = _sparse_prefill_into(family, ops, arrays, scalars,
                                                    (out, max_logits, lse))
    if not indexer_topk:
        return out, max_logits, lse
    return out, max_logits, lse, _indexer_lse(family, ops, q, kv, indices, sm_scale, d_v,
                                              topk_length, int(indexer_topk))


def _sparse_prefill_into(family, ops, arrays, scalars, outputs):
    """Sparse prefill writing `outputs` (out, max_logits, lse; None ones are allocated here)."""
    q, kv, indices, topk_length, attn_sink = arrays
    s_q, h_q, d_v = int(q.shape[0]), int(q.shape[1]), scalars[1]
    out, max_logits, lse = outputs
    if out is None:
        out = family.empty((s_q, h_q, d_v), "bfloat16")
    if max_logits is None:
        max_logits = family.empty((s_q, h_q), "float32")
    if lse is None:
        lse = family.empty((s_q, h_q), "float32")
    if ops is not None:
        ops.sparse_prefill_out(*arrays, *scalars, out, max_logits, lse)
        return out, max_logits, lse
    _C.sparse_prefill(
        native(q), native(kv), native(indices), native(out), native(max_logits), native(lse),
        topk_length=native(topk_length),
        attn_sink=native(attn_sink),
        softmax_scale=scalars[0],
        head_dim_v=d_v,
    )
    return out, max_logits, lse


def _indexer_lse(family, ops, q, kv, indices, sm_scale, d_v, topk_length, indexer_topk):
    """lse over indices[..., :indexer_topk] (and below topk_length): a second prefill pass."""
    s_q, h_q = int(q.shape[0]), int(q.shape[1])
    head = indices[..., :indexer_topk]
    lengths = None if topk_length is None else family.minimum(topk_length, int(head.shape[-1]))
    if ops is not None:
        return ops.sparse_prefill(q, kv, head, lengths, None, float(sm_scale), int(d_v))[2]
    scratch_out = family.empty((s_q, h_q, d_v), "bfloat16")
    scratch_max = family.empty((s_q, h_q), "float32")
    lse_indexer = family.empty((s_q, h_q), "float32")
    _C.sparse_prefill(
        native(q), native(kv), native(head), native(scratch_out), native(scratch_max),
        native(lse_indexer),
        topk_length=native(lengths),
        softmax_scale=float(sm_scale),
        head_dim_v=int(d_v),
    )
    return lse_indexer
