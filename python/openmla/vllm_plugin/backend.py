"""vLLM attention backends for DeepSeek V3.2 (sparse MLA) on CPU, built on openmla.

Two backends, both with 64-token pages:

* ``OpenMLASparseBackend`` (registered as vLLM's ``CUSTOM`` attention backend): the MLA layer's
  latent cache, either ``fp8_ds_mla`` (FlashMLA's V32 record, 656 B/token, attention by
  openmla's sparse decode kernel) or bf16 (``auto`` / ``bfloat16``, 576 values/token, attention
  by openmla's sparse prefill kernel). Every token of a step, prefill or decode, goes through
  the top-k MQA path (the "absorbed" form), as FlashMLA's sparse kernels do.
* ``OpenMLAIndexerBackend``: metadata for the lightning indexer's key cache (132 B/token FP8
  records), read by ``openmla.vllm_plugin.indexer.OpenMLASparseAttnIndexer``.

Both builders produce the same per-token view of the step (``OpenMLATokenMetadata``): each token
is its own query row with its own causal context length and its request's block-table row, the
shape openmla's paged ops take directly. The indexer writes per-request token positions into
vLLM's shared top-k buffer (vLLM's contract); the attention maps them to cache slots with its own
block table (``torch.ops.openmla.abs_indices_to_cache_indices``).

Debugging: ``OPENMLA_VLLM_CHECK_TOPK=1`` checks each step's indexer output (every position
selected while the context fits in top-k) and attention output (against a torch reference over
the selected cache rows); ``OPENMLA_VLLM_TRACE=1`` prints each step's per-token metadata.
"""

import os
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from vllm.v1.attention.backend import (
    AttentionBackend,
    AttentionCGSupport,
    AttentionMetadata,
    AttentionMetadataBuilder,
    CommonAttentionMetadata,
    MLAAttentionImpl,
    MultipleOf,
)
from vllm.model_executor.layers.attention.sparse_mla_attention import SharedTopkIndicesBuffer

import openmla
from openmla import torch_ops  # noqa: F401  (registers torch.ops.openmla.*)

PAGE_SIZE = 64
HEAD_SIZE = 576  # kv_lora_rank 512 + qk_rope_head_dim 64
KV_LORA_RANK = 512
FP8_KV_CACHE_DTYPES = ("fp8_ds_mla",)
BF16_KV_CACHE_DTYPES = ("auto", "bfloat16")
SUPPORTED_KV_CACHE_DTYPES = FP8_KV_CACHE_DTYPES + BF16_KV_CACHE_DTYPES
_TRACE = os.environ.get("OPENMLA_VLLM_TRACE", "0") not in ("", "0")
_CHECK = os.environ.get("OPENMLA_VLLM_CHECK_TOPK", "0") not in ("", "0")


@dataclass
class OpenMLATokenMetadata(AttentionMetadata):
    """One query row per token (decode and prefill tokens alike)."""

    num_reqs: int
    num_actual_tokens: int
    max_query_len: int
    max_seq_len: int
    query_start_loc: torch.Tensor
    slot_mapping: torch.Tensor  # [num_tokens] int64, -1 = padding
    req_id_per_token: torch.Tensor  # [num_tokens] int64
    context_lens: torch.Tensor  # [num_tokens] int32: keys visible to each token (causal)
    token_block_table: torch.Tensor  # [num_tokens, max_blocks] int32: its request's row
    block_size: int = PAGE_SIZE
    # Read unconditionally by vLLM's MLA layer (mla_attention.py forward_impl): all tokens are
    # "decode" tokens, so the layer never takes its dense-MHA prefill branch.
    num_decodes: int = 0
    num_prefills: int = 0
    num_decode_tokens: int = 0
    num_prefill_tokens: int = 0


def build_token_metadata(common: CommonAttentionMetadata, block_size: int) -> OpenMLATokenMetadata:
    num_tokens = common.num_actual_tokens
    qsl = common.query_start_loc_cpu.to(torch.int64)
    query_lens = qsl[1:] - qsl[:-1]
    seq_lens = common.seq_lens.to("cpu", torch.int64)[: common.num_reqs]
    req_ids = torch.repeat_interleave(torch.arange(common.num_reqs), query_lens)[:num_tokens]
    # Position of each token in its request: the query is the last query_len tokens.
    offset_in_query = torch.arange(num_tokens) - qsl[req_ids]
    context_lens = (seq_lens[req_ids] - query_lens[req_ids] + offset_in_query + 1).to(torch.int32)
    block_table = common.block_table_tensor[: common.num_reqs]
    token_block_table = block_table.index_select(0, req_ids).to(torch.int32).contiguous()
    return OpenMLATokenMetadata(
        num_reqs=common.num_reqs,
        num_actual_tokens=num_tokens,
        max_query_len=common.max_query_len,
        max_seq_len=common.max_seq_len,
        query_start_loc=common.query_start_loc,
        slot_mapping=common.slot_mapping[:num_tokens],
        req_id_per_token=req_ids,
        context_lens=context_lens.contiguous(),
        token_block_table=token_block_table,
        block_size=block_size,
        num_decodes=common.num_reqs,
        num_prefills=0,
        num_decode_tokens=num_tokens,
        num_prefill_tokens=0,
    )


class OpenMLATokenMetadataBuilder(AttentionMetadataBuilder[OpenMLATokenMetadata]):
    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.NEVER

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self.block_size = kv_cache_spec.block_size

    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata,
              fast_build: bool = False) -> OpenMLATokenMetadata:
        meta = build_token_metadata(common_attn_metadata, self.block_size)
        if _TRACE:
            c = common_attn_metadata
            print(f"OPENMLA_TRACE {type(self).__name__} reqs={c.num_reqs} "
                  f"tokens={c.num_actual_tokens} qsl={c.query_start_loc_cpu.tolist()} "
                  f"seq_lens={c.seq_lens.tolist()} ctx={meta.context_lens.tolist()[-4:]} "
                  f"slots={meta.slot_mapping.tolist()[-4:]} "
                  f"bt={meta.token_block_table[:, :3].tolist()[-2:]}", flush=True)
        return meta


class _PageSize64:
    """Shared backend descriptors: MLA with one KV head, pages of exactly 64 tokens."""

    @staticmethod
    def get_supported_kernel_block_sizes(kv_cache_spec=None) -> list:
        return [PAGE_SIZE]

    @classmethod
    def supports_block_size(cls, block_size: Optional[int]) -> bool:
        return block_size is None or block_size == PAGE_SIZE

    @classmethod
    def is_mla(cls) -> bool:
        return True

    @staticmethod
    def get_builder_cls():
        return OpenMLATokenMetadataBuilder

    @staticmethod
    def get_metadata_cls():
        return OpenMLATokenMetadata


class OpenMLASparseBackend(_PageSize64, AttentionBackend):
    supported_dtypes: ClassVar[list] = [torch.bfloat16]
    supported_kv_cache_dtypes: ClassVar[list] = list(SUPPORTED_KV_CACHE_DTYPES)

    @staticmethod
    def get_name() -> str:
        return "CUSTOM"

    @staticmethod
    def get_impl_cls():
        return OpenMLASparseImpl

    @classmethod
    def get_supported_head_sizes(cls) -> list:
        return [HEAD_SIZE]

    @classmethod
    def is_sparse(cls) -> bool:
        return True


class OpenMLAIndexerBackend(_PageSize64, AttentionBackend):
    """The indexer key cache's backend: metadata only (the indexer op does the work)."""

    @staticmethod
    def get_name() -> str:
        return "OPENMLA_V32_INDEXER"

    @staticmethod
    def get_impl_cls():
        raise NotImplementedError("the indexer cache has no attention impl")

    @classmethod
    def get_supported_head_sizes(cls) -> list:
        return [132]  # 128 e4m3 codes + one fp32 scale per token


class OpenMLASparseImpl(MLAAttentionImpl[OpenMLATokenMetadata], SharedTopkIndicesBuffer):
    """Top-k sparse MLA over the latent cache with openmla's kernels."""

    is_sparse = True
    can_return_lse_for_decode = True
    supports_quant_query_input = False
    supports_dense_mha_prefill = False

    def __init__(self, num_heads, head_size, scale, num_kv_heads, alibi_slopes, sliding_window,
                 kv_cache_dtype, logits_soft_cap, attn_type, kv_sharing_target_layer_name,
                 topk_indices_buffer=None, indexer=None, **mla_args):
        if head_size != HEAD_SIZE or mla_args.get("kv_lora_rank") != KV_LORA_RANK:
            raise ValueError(f"openmla sparse MLA: head_size must be {HEAD_SIZE} (kv_lora_rank "
                             f"512 + rope 64), got head_size={head_size}, "
                             f"kv_lora_rank={mla_args.get('kv_lora_rank')}")
        if kv_cache_dtype not in SUPPORTED_KV_CACHE_DTYPES:
            raise ValueError(f"openmla sparse MLA: kv_cache_dtype {kv_cache_dtype!r} is not "
                             f"supported (use one of {SUPPORTED_KV_CACHE_DTYPES})")
        if any([alibi_slopes, sliding_window, logits_soft_cap, kv_sharing_target_layer_name]):
            raise ValueError("openmla sparse MLA: alibi, sliding window, logits soft-cap and KV "
                             "sharing are not supported")
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = float(scale)
        self.num_kv_heads = num_kv_heads
        self.kv_cache_dtype = kv_cache_dtype
        self.fp8 = kv_cache_dtype in FP8_KV_CACHE_DTYPES
        self.kv_lora_rank = KV_LORA_RANK
        self.dcp_world_size = 1
        self.dcp_rank = 0
        self.pcp_world_size = 1
        self.lse_base_on_e = True
        self.init_topk_indices_buffer(indexer, topk_indices_buffer)

    def record_logical_topk_ready(self) -> None:
        """Called by vLLM's MLA layer after the indexer; no sparse-MLA index groups here."""

    def prepare_for_batch(self, attn_metadata) -> None:
        """Index-group hook of vLLM's sparse MLA impls; nothing to prepare."""

    def do_kv_cache_update(self, kv_c_normed, k_pe, kv_cache, slot_mapping, kv_cache_dtype,
                           k_scale):
        if kv_cache.numel() == 0:
            return
        num_tokens = slot_mapping.shape[0]
        latents = torch.cat([kv_c_normed[:num_tokens],
                             k_pe[:num_tokens].reshape(num_tokens, -1)], dim=-1)
        torch.ops.openmla.write_kv_tokens(latents.to(torch.bfloat16), slot_mapping.flatten(),
                                          "V32" if self.fp8 else "BF16", kv_cache.unsqueeze(2))

    def forward_mha(self, *args, **kwargs):
        raise NotImplementedError("openmla sparse MLA routes every token through forward_mqa")

    def forward_mqa(self, q, kv_c_and_k_pe_cache, attn_metadata: OpenMLATokenMetadata, layer):
        if isinstance(q, tuple):
            q = torch.cat(q, dim=-1)
        num_tokens = q.shape[0]
        q = q.to(torch.bfloat16)
        topk = self.topk_indices_buffer[:num_tokens]
        # Per-request positions -> slots of this layer's cache (-1 stays -1).
        slots = torch.ops.openmla.abs_indices_to_cache_indices(
            topk.unsqueeze(1), attn_metadata.token_block_table[:num_tokens],
            attn_metadata.block_size)
        topk_length = torch.clamp(attn_metadata.context_lens[:num_tokens], max=topk.shape[-1])
        cache = kv_c_and_k_pe_cache
        out, lse = self._attend(q, cache, slots, topk_length)
        if _CHECK:
            self._check(q, cache, slots, out)
        return out, lse

    def _check(self, q, cache, slots, out):
        """Debug check (OPENMLA_VLLM_CHECK_TOPK=1): out against a torch reference."""
        if self.fp8:
            rows = torch.ops.openmla.dequantize_kv_cache(cache.unsqueeze(2), "V32")
        else:
            rows = cache.unsqueeze(2)
        rows = rows.reshape(-1, HEAD_SIZE).float()
        for t in range(q.shape[0]):
            idx = slots[t, 0]
            idx = idx[idx >= 0].long()
            kv = rows[idx]
            p = torch.softmax(q[t].float() @ kv.T * self.scale, dim=-1)
            ref = p @ kv[:, :KV_LORA_RANK]
            err = (out[t].float() - ref).abs().max().item()
            if err > 0.02 * max(1.0, ref.abs().max().item()):
                raise AssertionError(f"openmla sparse MLA token {t}: max error {err} over "
                                     f"{idx.numel()} keys (slots {idx[:4].tolist()}...)")

    def _attend(self, q, cache, slots, topk_length):
        if self.fp8:
            sched, _ = openmla.get_mla_metadata()
            out, lse = openmla.flash_mla_with_kvcache(
                q.unsqueeze(1), cache.unsqueeze(2), None, None, KV_LORA_RANK, sched,
                softmax_scale=self.scale, is_fp8_kvcache=True, indices=slots,
                topk_length=topk_length.to(torch.int32))
            return out[:, 0], lse[:, :, 0]
        flat = cache.reshape(-1, 1, cache.shape[-1])
        out, _, lse = openmla.flash_mla_sparse_fwd(q, flat, slots, self.scale, KV_LORA_RANK,
                                                   topk_length=topk_length.to(torch.int32))
        return out, lse
