"""openmla: DeepSeek FlashMLA's attention kernels on x86 CPUs, with FlashMLA's Python API.

    import openmla as flash_mla

    sched_meta, _ = flash_mla.get_mla_metadata()
    out, lse = flash_mla.flash_mla_with_kvcache(q, k_cache, None, None, 512, sched_meta,
                                                is_fp8_kvcache=True, indices=indices)

Arrays are CPU PyTorch tensors or NumPy arrays (bfloat16 / float8_e4m3fn through ml_dtypes),
used in place (zero-copy, any strides the library accepts). Outputs are allocated in the array
family of the first input, or written into `out=` arrays. Errors: ValueError for bad shapes,
strides or values, TypeError for wrong dtypes, RuntimeError for what this build cannot do, and
AssertionError for FlashMLA's interface assertions (e.g. reusing a sched_meta inconsistently).
"""

import sys

from . import _openmla
from .compressor import (
    compress_norm_rope_store,
    compressor_gather_slots,
    compressor_rope_cache,
    save_partial_states,
)
from .flash_mla_interface import (
    FlashMLASchedMeta,
    flash_mla_sparse_fwd,
    flash_mla_with_kvcache,
    get_mla_metadata,
)
from .indexer import (
    PagedMqaLogitsMetadata,
    empty_indexer_cache,
    fp8_mqa_logits,
    fp8_paged_mqa_logits,
    get_paged_mqa_logits_metadata,
    indexer_dequantize_cache,
    indexer_k_quant_and_cache,
    indexer_quantize_keys,
    indexer_topk,
    indexer_write_keys,
    paged_indexer_topk,
)
from .v4_blocks import engram_embed, engram_gate, engram_hash, hc_head, hc_post, hc_pre
from .quant import (
    FP8KVCacheLayout,
    abs_indices2indices_in_kvcache,
    abs_indices_to_cache_indices,
    dequantize_k_cache,
    empty_k_cache,
    quantize_k_cache,
)

# The torch custom ops (torch.ops.openmla.*) are registered now when torch is already imported,
# else on the first call given torch tensors (or by `import openmla.torch_ops`); torch itself is
# never imported here.
if "torch" in sys.modules:
    try:
        from . import torch_ops  # noqa: F401
    except (ImportError, AttributeError):  # pragma: no cover - torch older than 2.4
        pass

Plan = _openmla.Plan
KvFormat = _openmla.KvFormat
IndexerKeyFormat = _openmla.IndexerKeyFormat

__version__ = _openmla.version()


def cpu_features():
    """CPU features detected at start-up, e.g. "avx2 fma avx512f ... (amx permitted)"."""
    return _openmla.cpu_features()


def list_kernels():
    """Registered kernels in priority order as (name, op, isa, runnable) tuples."""
    return _openmla.list_kernels()


__all__ = [
    "FP8KVCacheLayout",
    "FlashMLASchedMeta",
    "IndexerKeyFormat",
    "KvFormat",
    "PagedMqaLogitsMetadata",
    "Plan",
    "abs_indices2indices_in_kvcache",
    "abs_indices_to_cache_indices",
    "compress_norm_rope_store",
    "compressor_gather_slots",
    "compressor_rope_cache",
    "cpu_features",
    "dequantize_k_cache",
    "empty_indexer_cache",
    "empty_k_cache",
    "engram_embed",
    "engram_gate",
    "engram_hash",
    "flash_mla_sparse_fwd",
    "flash_mla_with_kvcache",
    "fp8_mqa_logits",
    "fp8_paged_mqa_logits",
    "get_mla_metadata",
    "get_paged_mqa_logits_metadata",
    "indexer_dequantize_cache",
    "indexer_k_quant_and_cache",
    "indexer_quantize_keys",
    "indexer_topk",
    "indexer_write_keys",
    "hc_head",
    "hc_post",
    "hc_pre",
    "list_kernels",
    "paged_indexer_topk",
    "quantize_k_cache",
    "save_partial_states",
    "__version__",
]
