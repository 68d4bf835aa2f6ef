"""FP8 KV-cache helpers with the interface of FlashMLA's tests/quant.py, byte-exact.

`quantize_k_cache` returns the caches FlashMLA's kernels (and openmla's) take:
* V32 (DeepSeek V3.2, d = 576): [num_blocks, page, 1, 656] viewed from a
  [num_blocks, page + 1, 656] buffer (one padding token per page, as upstream allocates it);
* MODEL1 (DeepSeek V4, d = 512): pages of ceil(584 * page / 576) * 576 bytes viewed as
  [num_blocks, page, 1, 584] (576-byte token records, then 8-byte scale records).
PyTorch inputs give float8_e4m3fn tensors (as upstream), NumPy inputs give uint8 arrays.
"""

import enum

import numpy as np

from . import _openmla as _C
from ._arrays import Family, _torch, native

# Byte offsets and sizes of the token records: the C++ library's one table (kv_format.h).
_L = _C.kv_layout()


class FP8KVCacheLayout(enum.Enum):
    V32_FP8Sparse = 1
    MODEL1_FP8Sparse = 2

    def get_meta(self):
        """(d, d_nope, d_rope, tile_size, num_tiles), as upstream."""
        prefix = "v32_" if self == FP8KVCacheLayout.V32_FP8Sparse else "model1_"
        return (_L[prefix + "head_dim"], _L[prefix + "nope_dim"], _L["rope_dim"],
                _L[prefix + "tile"], _L[prefix + "num_tiles"])


_FORMATS = {1: _C.KvFormat.V32, 2: _C.KvFormat.MODEL1}


def _layout(kvcache_layout):
    """FP8KVCacheLayout from ours, FlashMLA's own enum (by value), an int or a name."""
    if isinstance(kvcache_layout, str):
        return FP8KVCacheLayout[kvcache_layout]
    value = getattr(kvcache_layout, "value", kvcache_layout)
    try:
        return FP8KVCacheLayout(value)
    except ValueError:
        raise NotImplementedError(f"Unsupported kvcache_layout: {kvcache_layout}") from None


def _four_dims(x, name):
    if len(x.shape) != 4:
        raise ValueError(f"{name}: expected 4 dimensions (num_blocks, block_size, h_k, d), "
                         f"got shape {tuple(x.shape)}")
    return int(x.shape[0]), int(x.shape[1])


def _byte_buffer(family, shape):
    """Zeroed byte buffer: float8_e4m3fn for PyTorch (as upstream), uint8 for NumPy."""
    buf = family.empty(shape, "uint8", zero=True)
    if family.torch:
        buf = buf.view(_torch().float8_e4m3fn)
    return buf


def _as_strided(a, shape, strides_in_elements):
    itemsize = a.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        a, shape=shape, strides=tuple(s * itemsize for s in strides_in_elements))


def empty_k_cache(num_blocks, block_size, kvcache_layout, like=None):
    """An FP8 cache of the layout's shape and padding, zero-filled, in `like`'s array family
    (NumPy when None)."""
    layout = _layout(kvcache_layout)
    family = Family(like if like is not None else np.empty(0))
    if layout == FP8KVCacheLayout.V32_FP8Sparse:
        buf = _byte_buffer(family, (num_blocks, block_size + 1, _L["v32_record_bytes"]))
        view = buf[:, :block_size, :]
        return view.unsqueeze(2) if family.torch else view[:, :, None, :]
    view_bytes = _L["model1_view_bytes"]
    page_bytes = _C.kv_page_bytes(_C.KvFormat.MODEL1, block_size)
    buf = _byte_buffer(family, (num_blocks, page_bytes))
    if family.torch:
        return buf[:, : block_size * view_bytes].view(num_blocks, block_size, 1, view_bytes)
    return _as_strided(buf, (num_blocks, block_size, 1, view_bytes),
                       (page_bytes, view_bytes, view_bytes, 1))


def quantize_k_cache(input_k_cache, kvcache_layout, *, out=None):
    """Quantises a bfloat16 cache [num_blocks, block_size, 1, d] into the FP8 layout, byte for
    byte as FlashMLA's reference quantiser (power-of-two scales, e4m3 with round-to-nearest-even,
    RoPE copied as bf16; NaN latents give NaN scales and codes). Padding bytes are zero.
    `out=` takes a preallocated cache view (e.g. from `empty_k_cache`) and fills it in place."""
    layout = _layout(kvcache_layout)
    num_blocks, block_size = _four_dims(input_k_cache, "input_k_cache")
    if out is None:
        out = empty_k_cache(num_blocks, block_size, layout, like=input_k_cache)
    _C.quantize_kv_cache(native(input_k_cache), _FORMATS[layout.value], native(out))
    return out


def dequantize_k_cache(quant_k_cache, kvcache_layout, *, out=None):
    """Dequantises an FP8 cache into bfloat16 [num_blocks, block_size, 1, d], exactly as
    FlashMLA's reference dequantiser."""
    layout = _layout(kvcache_layout)
    num_blocks, block_size = _four_dims(quant_k_cache, "quant_k_cache")
    if out is None:
        d = layout.get_meta()[0]
        out = Family(quant_k_cache).empty((num_blocks, block_size, 1, d), "bfloat16")
    _C.dequantize_kv_cache(native(quant_k_cache), _FORMATS[layout.value], native(out))
    return out


def abs_indices_to_cache_indices(abs_indices, block_table, block_size, *, out=None):
    """Logical token positions [b, s_q, topk] -> flat cache slots
    block_table[b, pos // block_size] * block_size + pos % block_size (int32). -1 stays -1; any
    other negative position, or one beyond the block table, also becomes -1."""
    if out is None:
        out = Family(abs_indices).empty(tuple(abs_indices.shape), "int32")
    _C.abs_indices_to_cache_indices(native(abs_indices), native(block_table), int(block_size),
                                    native(out))
    return out


# FlashMLA's name (tests/quant.py).
abs_indices2indices_in_kvcache = abs_indices_to_cache_indices
