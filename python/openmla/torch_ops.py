"""openmla's operations as PyTorch custom ops (`torch.ops.openmla.*`), for torch.compile graphs.

Importing this module imports torch and registers the ops; `import openmla` does it only when
torch is already imported (and `flash_mla_with_kvcache` / `flash_mla_sparse_fwd` do it on their
first torch call), so the package still works with NumPy alone. Each op has a CPU kernel that
hands the tensors to the C++ library without a copy, and a fake (meta) kernel that derives the
outputs' shapes, strides and dtypes from the inputs without reading data.

Ops that produce results come in two forms, both registered from one table entry:

    torch.ops.openmla.NAME(inputs...) -> outputs          functional: allocates its outputs
    torch.ops.openmla.NAME_out(inputs..., outputs...) -> () writes the given outputs in place

Ops that only update a tensor (a KV cache) have the writing form alone, under NAME.

Adding an op (e.g. an indexer op the binding gains):
  1. write `_call_NAME(*inputs, *outputs)` that calls the `_openmla` function with `native(x)`
     for every array, and, if the op has outputs worth allocating, `_alloc_NAME(*inputs)` that
     returns them (new_empty / empty_strided only: it also runs on fake tensors);
  2. add `_Spec("NAME", "<schema of the inputs>", ("out1", ...), _call_NAME, _alloc_NAME)` to
     `_SPECS` (inputs: `Tensor x`, `Tensor? x` for optional, `float`, `int`, `bool`, `str`);
  3. add an opcheck case to tests/python/test_torch_ops.py (FUNCTIONAL_CASES or WRITING_CASES).
An input the op also updates in place (a cache a fused op writes) is annotated in the inputs
text itself, with alias letters from `z` down (`Tensor(z!) kv_cache`); outputs take `a`, `b`, ...
"""

import dataclasses
from typing import Callable, Optional, Tuple

import torch

from . import _openmla as _C
from ._arrays import native

NAMESPACE = "openmla"

_FORMATS = {"V32": _C.KvFormat.V32, "MODEL1": _C.KvFormat.MODEL1, "BF16": _C.KvFormat.BF16}
_FP8_HEAD_DIM = {"V32": 576, "MODEL1": 512}


@dataclasses.dataclass(frozen=True)
class _Spec:
    """One op: its name, the schema text of its inputs, the names of the tensors it writes,
    `call(*inputs, *outputs)` running the native op, and `alloc(*inputs) -> outputs` (None for
    ops that only update tensors the caller owns)."""

    name: str
    inputs: str
    outputs: Tuple[str, ...]
    call: Callable
    alloc: Optional[Callable] = None


def _format(name):
    try:
        return _FORMATS[name]
    except KeyError:
        raise ValueError(f"format: expected one of {sorted(_FORMATS)}, got {name!r}") from None


# --- sparse decode (flash_mla_with_kvcache with indices) -------------------------------------

def _call_sparse_decode(q, kv_cache, indices, topk_length, attn_sink, extra_kv_cache,
                        extra_indices, extra_topk_length, softmax_scale, head_dim_v, out, lse):
    _C.sparse_decode(
        native(q), native(kv_cache), native(indices), native(out), native(lse),
        topk_length=native(topk_length), attn_sink=native(attn_sink),
        extra_kv_cache=native(extra_kv_cache), extra_indices=native(extra_indices),
        extra_topk_length=native(extra_topk_length),
        softmax_scale=float(softmax_scale), head_dim_v=int(head_dim_v))


def _alloc_sparse_decode(q, kv_cache, indices, topk_length, attn_sink, extra_kv_cache,
                         extra_indices, extra_topk_length, softmax_scale, head_dim_v):
    """out [b, s_q, h_q, head_dim_v] bf16; lse [b, h_q, s_q] f32 with FlashMLA's strides (the
    transpose of a [b, s_q, h_q] buffer)."""
    b, s_q, h_q = q.shape[0], q.shape[1], q.shape[2]
    out = q.new_empty((b, s_q, h_q, head_dim_v), dtype=torch.bfloat16)
    lse = torch.empty_strided((b, h_q, s_q), (s_q * h_q, 1, h_q), dtype=torch.float32,
                              device=q.device)
    return out, lse


# --- dense decode (flash_mla_with_kvcache without indices) -----------------------------------

def _call_dense_decode(q, kv_cache, block_table, cache_seqlens, softmax_scale, causal, head_dim_v,
                       out, lse):
    _C.dense_decode(
        native(q), native(kv_cache), native(block_table), native(cache_seqlens),
        native(out), native(lse),
        softmax_scale=float(softmax_scale), causal=bool(causal), head_dim_v=int(head_dim_v))


def _alloc_dense_decode(q, kv_cache, block_table, cache_seqlens, softmax_scale, causal,
                        head_dim_v):
    """out [b, s_q, h_q, head_dim_v] in q's dtype for float16 q, else bf16; lse [b, h_q, s_q]."""
    b, s_q, h_q = q.shape[0], q.shape[1], q.shape[2]
    dtype = torch.float16 if q.dtype == torch.float16 else torch.bfloat16
    out = q.new_empty((b, s_q, h_q, head_dim_v), dtype=dtype)
    lse = q.new_empty((b, h_q, s_q), dtype=torch.float32)
    return out, lse


# --- sparse prefill (flash_mla_sparse_fwd) ----------------------------------------------------

def _call_sparse_prefill(q, kv, indices, topk_length, attn_sink, softmax_scale, head_dim_v,
                         out, max_logits, lse):
    _C.sparse_prefill(
        native(q), native(kv), native(indices), native(out), native(max_logits), native(lse),
        topk_length=native(topk_length), attn_sink=native(attn_sink),
        softmax_scale=float(softmax_scale), head_dim_v=int(head_dim_v))


def _alloc_sparse_prefill(q, kv, indices, topk_length, attn_sink, softmax_scale, head_dim_v):
    """out [s_q, h_q, head_dim_v] bf16; max_logits and lse [s_q, h_q] f32."""
    s_q, h_q = q.shape[0], q.shape[1]
    out = q.new_empty((s_q, h_q, head_dim_v), dtype=torch.bfloat16)
    max_logits = q.new_empty((s_q, h_q), dtype=torch.float32)
    lse = q.new_empty((s_q, h_q), dtype=torch.float32)
    return out, max_logits, lse


# --- KV-cache helpers -------------------------------------------------------------------------

def _call_write_kv_tokens(latents, slot_mapping, format, cache):
    _C.write_kv_tokens(native(latents), native(slot_mapping), _format(format), native(cache))


def _call_quantize_kv_cache(src, format, dst):
    _C.quantize_kv_cache(native(src), _format(format), native(dst))


def _call_dequantize_kv_cache(src, format, dst):
    _C.dequantize_kv_cache(native(src), _format(format), native(dst))


def _alloc_dequantize_kv_cache(src, format):
    """[num_blocks, page_size, 1, head_dim] bf16 (head_dim 576 for V32, 512 for MODEL1)."""
    if format not in _FP8_HEAD_DIM:
        raise ValueError(f"format: expected one of {sorted(_FP8_HEAD_DIM)}, got {format!r}")
    return src.new_empty((src.shape[0], src.shape[1], 1, _FP8_HEAD_DIM[format]),
                         dtype=torch.bfloat16)


def _call_abs_indices_to_cache_indices(abs_indices, block_table, page_size, out):
    _C.abs_indices_to_cache_indices(native(abs_indices), native(block_table), int(page_size),
                                    native(out))


def _alloc_abs_indices_to_cache_indices(abs_indices, block_table, page_size):
    return abs_indices.new_empty(abs_indices.shape, dtype=torch.int32)


_SPECS = (
    _Spec("sparse_decode",
          "Tensor q, Tensor kv_cache, Tensor indices, Tensor? topk_length, Tensor? attn_sink, "
          "Tensor? extra_kv_cache, Tensor? extra_indices, Tensor? extra_topk_length, "
          "float softmax_scale, int head_dim_v",
          ("out", "lse"), _call_sparse_decode, _alloc_sparse_decode),
    _Spec("dense_decode",
          "Tensor q, Tensor kv_cache, Tensor block_table, Tensor cache_seqlens, "
          "float softmax_scale, bool causal, int head_dim_v",
          ("out", "lse"), _call_dense_decode, _alloc_dense_decode),
    _Spec("sparse_prefill",
          "Tensor q, Tensor kv, Tensor indices, Tensor? topk_length, Tensor? attn_sink, "
          "float softmax_scale, int head_dim_v",
          ("out", "max_logits", "lse"), _call_sparse_prefill, _alloc_sparse_prefill),
    _Spec("write_kv_tokens", "Tensor latents, Tensor slot_mapping, str format",
          ("cache",), _call_write_kv_tokens),
    _Spec("quantize_kv_cache", "Tensor src, str format", ("dst",), _call_quantize_kv_cache),
    _Spec("dequantize_kv_cache", "Tensor src, str format",
          ("dst",), _call_dequantize_kv_cache, _alloc_dequantize_kv_cache),
    _Spec("abs_indices_to_cache_indices", "Tensor abs_indices, Tensor block_table, int page_size",
          ("out",), _call_abs_indices_to_cache_indices, _alloc_abs_indices_to_cache_indices),
)


def _writing_schema(spec):
    """`(inputs, Tensor(a!) o1, Tensor(b!) o2, ...) -> ()`."""
    written = ", ".join(f"Tensor({chr(ord('a') + i)}!) {name}"
                        for i, name in enumerate(spec.outputs))
    return f"({spec.inputs}, {written}) -> ()"


def _functional_schema(spec):
    results = ", ".join("Tensor" for _ in spec.outputs)
    return f"({spec.inputs}) -> ({results})" if len(spec.outputs) > 1 else f"({spec.inputs}) -> Tensor"


def _functional(spec):
    def run(*args):
        outputs = spec.alloc(*args)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        spec.call(*args, *outputs)
        return outputs if len(outputs) > 1 else outputs[0]

    return run


def _nothing(*args):
    return None


def _define(lib, name, schema, impl, fake):
    lib.define(name + schema)
    lib.impl(name, impl, "CPU")
    torch.library.register_fake(f"{NAMESPACE}::{name}", fake, lib=lib)


def _register(lib, spec):
    """NAME_out (or NAME, for ops without `alloc`) writing its outputs, and NAME allocating them."""
    writer = spec.name + "_out" if spec.alloc is not None else spec.name
    _define(lib, writer, _writing_schema(spec), spec.call, _nothing)
    if spec.alloc is not None:
        _define(lib, spec.name, _functional_schema(spec), _functional(spec), spec.alloc)


def _register_all():
    lib = torch.library.Library(NAMESPACE, "FRAGMENT")
    for spec in _SPECS:
        _register(lib, spec)
    return lib


# Kept alive for the life of the process: dropping the Library would deregister the ops.
_LIB = _register_all()
ops = getattr(torch.ops, NAMESPACE)
OP_NAMES = tuple(n for s in _SPECS for n in ((s.name + "_out", s.name) if s.alloc else (s.name,)))
