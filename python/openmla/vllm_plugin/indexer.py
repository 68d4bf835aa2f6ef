"""DeepSeek V3.2's lightning indexer on CPU with openmla, as vLLM's out-of-tree custom op.

vLLM's ``Indexer`` (model_executor/models/deepseek_v2.py) computes the FP8 queries, the bf16
keys and the per-head weights (already scaled by the query scales, softmax scale and
n_heads^-0.5), then calls ``SparseAttnIndexer``. ``CustomOp.register_oot`` makes vLLM build
``OpenMLASparseAttnIndexer`` in its place; it

1. writes the keys into the indexer cache ([num_blocks, 64, 132] uint8: per page 64 x 128 e4m3
   codes, then 64 fp32 power-of-two scales) with ``openmla.indexer_k_quant_and_cache``;
2. scores and selects with ``openmla.paged_indexer_topk`` (fused logits + top-k, no logits
   matrix), one query row per token with its own causal length, for prefill and decode alike;
3. stores per-request token positions (ascending, -1 padded) in vLLM's shared top-k buffer,
   which the sparse MLA backend maps to its cache slots.
"""

import os

import torch

from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.sparse_attn_indexer import SparseAttnIndexer

import openmla

from .backend import OpenMLATokenMetadata


_CHECK = os.environ.get("OPENMLA_VLLM_CHECK_TOPK", "0") not in ("", "0")


def _check_all_selected(indices, context_lens, topk):
    """Debug check (OPENMLA_VLLM_CHECK_TOPK=1): a row whose context fits in topk selects
    every position 0..len-1, then -1."""
    pos = torch.arange(indices.shape[1], dtype=torch.int32)
    for r in range(indices.shape[0]):
        n = int(context_lens[r])
        if n <= topk:
            want = torch.where(pos < n, pos, torch.full_like(pos, -1))
            if not torch.equal(indices[r], want):
                bad = (indices[r] != want).nonzero()[:8, 0].tolist()
                raise AssertionError(f"openmla indexer row {r} (context {n}): wrong entries at "
                                     f"{bad}: {indices[r][bad].tolist()}")


class OpenMLASparseAttnIndexer(SparseAttnIndexer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._identity_tables = {}

    def _identity(self, rows, width):
        """[rows, width] int32 table with table[r, j] = j: block j of "position space", so
        paged_indexer_topk returns positions instead of slots."""
        key = (rows, width)
        table = self._identity_tables.get(key)
        if table is None:
            table = torch.arange(width, dtype=torch.int32).expand(rows, width).contiguous()
            self._identity_tables = {key: table}
        return table

    def forward_native(self, hidden_states, q_quant, k, weights):
        return self._forward_openmla(hidden_states, q_quant, k, weights)

    def forward_cpu(self, hidden_states, q_quant, k, weights):
        return self._forward_openmla(hidden_states, q_quant, k, weights)

    def _forward_openmla(self, hidden_states, q_quant, k, weights):
        if isinstance(q_quant, tuple):
            if q_quant[1] is not None:
                raise NotImplementedError("openmla indexer: FP4 indexer queries")
            q_quant = q_quant[0]
        attn_metadata = get_forward_context().attn_metadata
        buffer = self.topk_indices_buffer
        if not isinstance(attn_metadata, dict):
            return buffer  # profiling / dummy run
        meta = attn_metadata[self.k_cache.prefix]
        assert isinstance(meta, OpenMLATokenMetadata), type(meta)
        num_tokens = meta.num_actual_tokens
        kv_cache = self.k_cache.kv_cache
        if not self.skip_k_cache_insert:
            openmla.indexer_k_quant_and_cache(k[:num_tokens], kv_cache, meta.slot_mapping,
                                              self.quant_block_size, self.scale_fmt)
        topk = self.topk_tokens
        buffer[:num_tokens] = -1
        if num_tokens == 0:
            return buffer
        block_table = meta.token_block_table
        indices = buffer[:num_tokens, :topk].unsqueeze(1)  # [T, 1, topk] view, written in place
        openmla.paged_indexer_topk(
            q_quant[:num_tokens].unsqueeze(1), kv_cache, weights[:num_tokens].float(),
            meta.context_lens, block_table, topk,
            out_block_table=self._identity(num_tokens, block_table.shape[1]),
            out_page_size=meta.block_size, indices=indices)
        if _CHECK:
            _check_all_selected(buffer[:num_tokens, :topk], meta.context_lens, topk)
        return buffer


def make_cpu_group_quant(original):
    """A stand-in for vLLM's ``per_token_group_quant_fp8`` as the V3.2 ``Indexer`` calls it for
    its queries (x [T * H, 128] bf16, one power-of-two scale per 128 values, row-major scales):
    on CPU vLLM only has a Triton fallback. The 128-wide ue8m0 case is openmla's indexer key
    quantiser; other CPU calls get a plain torch version; non-CPU tensors go to ``original``."""

    def per_token_group_quant_fp8(x, group_size, eps=1e-10, dtype=None,
                                  column_major_scales=False, tma_aligned_scales=False,
                                  out_q=None, use_ue8m0=None):
        if x.device.type != "cpu" or column_major_scales or tma_aligned_scales:
            return original(x, group_size, eps, dtype, column_major_scales, tma_aligned_scales,
                            out_q, use_ue8m0)
        dtype = torch.float8_e4m3fn if dtype is None else dtype
        shape = x.shape
        groups = x.reshape(-1, group_size)
        if group_size == 128 and use_ue8m0 and dtype == torch.float8_e4m3fn:
            codes, scales = openmla.indexer_quantize_keys(groups.contiguous(), "fp8")
        else:
            amax = groups.float().abs().amax(dim=-1).clamp_min(eps)
            scales = amax / torch.finfo(dtype).max
            if use_ue8m0:
                scales = torch.exp2(torch.ceil(torch.log2(scales)))
            codes = (groups.float() / scales[:, None]).clamp(
                torch.finfo(dtype).min, torch.finfo(dtype).max).to(dtype)
        codes = codes.view(shape)
        if out_q is not None:
            out_q.copy_(codes)
            codes = out_q
        return codes, scales.view(*shape[:-1], shape[-1] // group_size)

    return per_token_group_quant_fp8
