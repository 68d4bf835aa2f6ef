"""A user script written against FlashMLA's Python API, building its inputs the way FlashMLA's
tests do (bf16 latents -> quant.quantize_k_cache, logical indices ->
quant.abs_indices2indices_in_kvcache, get_mla_metadata reused across layers) and checking
flash_mla_with_kvcache / flash_mla_sparse_fwd against a float64 PyTorch reference with
FlashMLA's tolerances.

It imports `flash_mla` and `quant` (FlashMLA's tests/quant.py) and names no openmla API;
test_flashmla_script.py runs it unchanged with `flash_mla` bound to openmla
(`import openmla as flash_mla`) and `quant` to openmla.quant, on CPU tensors.
"""

import math

import torch

import flash_mla
import quant

device = torch.device("cpu")
torch.manual_seed(0)


def check_is_allclose(name, ans, ref, abs_tol, rel_tol, cos_diff_tol):
    a, r = ans.double(), ref.double()
    assert a.shape == r.shape, f"{name}: shape {tuple(a.shape)} vs {tuple(r.shape)}"
    for kind, fn in (("+inf", torch.isposinf), ("-inf", torch.isneginf), ("nan", torch.isnan)):
        assert torch.equal(fn(a), fn(r)), f"{name}: {kind} positions differ"
    special = ~torch.isfinite(a)
    a, r = a.masked_fill(special, 0), r.masked_fill(special, 0)
    err = (a - r).abs()
    ok = (err < abs_tol) | (err / (r.abs() + 1e-6) < rel_tol)
    assert bool(ok.all()), f"{name}: {int((~ok).sum())} elements out of tolerance"
    if float((r * r).sum()) >= 1e-12:
        cos_diff = 1 - 2 * float((a * r).sum()) / float((a * a + r * r).sum())
        assert cos_diff <= cos_diff_tol, f"{name}: cos_diff {cos_diff}"


def attend(q, keys, sm_scale, d_v, sink):
    """q [h, d], keys [T, d] float64 -> out [h, d_v], lse [h], max_logits [h]."""
    h = q.shape[0]
    if keys.shape[0] == 0:
        return (torch.zeros(h, d_v, dtype=torch.float64), torch.full((h,), math.inf, dtype=torch.float64),
                torch.full((h,), -math.inf, dtype=torch.float64))
    s = q @ keys.T * sm_scale
    lse = torch.logsumexp(s, dim=-1)
    out = torch.softmax(s, dim=-1) @ keys[:, :d_v]
    if sink is not None:
        out = out * torch.sigmoid(lse - sink.double()).unsqueeze(-1)
    return out, lse, s.max(dim=-1).values


def ref_sparse_decode(q, kv_deq, indices, topk_length, sink, sm_scale, extra=None):
    b, s_q, h_q, d = q.shape
    flat = kv_deq.view(-1, d).double()
    out = torch.zeros(b, s_q, h_q, 512, dtype=torch.float64)
    lse = torch.zeros(b, h_q, s_q, dtype=torch.float64)
    for i in range(b):
        for j in range(s_q):
            parts = []
            for cache, idx, lens in [(flat, indices, topk_length)] + ([extra] if extra else []):
                n = idx.shape[-1] if lens is None else int(lens[i])
                row = idx[i, j, :n].long()
                row = row[(row >= 0) & (row < cache.shape[0])]
                parts.append(cache[row])
            o, l, _ = attend(q[i, j].double(), torch.cat(parts), sm_scale, 512, sink)
            out[i, j], lse[i, :, j] = o, l
    return out, lse


def make_paged(b, s_k, block_size, d):
    """Latents for b requests of s_k tokens in randomly placed pages (FlashMLA test style)."""
    blocks_per_seq = (s_k + block_size - 1) // block_size
    num_blocks = b * blocks_per_seq
    block_table = torch.randperm(num_blocks, dtype=torch.int32).view(b, blocks_per_seq)
    kv = (torch.randn(num_blocks, block_size, 1, d) / 10).clamp(-1, 1).to(torch.bfloat16)
    return kv, block_table


def sparse_decode_case(layout, h_q, s_k, topk, block_size, with_extra):
    d = layout.get_meta()[0]
    b, s_q = 2, 2
    kv, block_table = make_paged(b, s_k, block_size, d)
    abs_indices = torch.stack([torch.randperm(s_k)[:topk] for _ in range(b * s_q)]).view(b, s_q, topk)
    abs_indices[:, :, -5:] = -1
    abs_indices = abs_indices.to(torch.int32)
    indices = quant.abs_indices2indices_in_kvcache(abs_indices, block_table, block_size)
    topk_length = torch.randint(0, topk + 1, (b,), dtype=torch.int32) if with_extra else None
    # NaN-poison every token no valid slot points at, as FlashMLA's tests do.
    used = torch.zeros(kv.shape[0] * block_size, dtype=torch.bool)
    for i in range(b):
        n = topk if topk_length is None else int(topk_length[i])
        row = indices[i, :, :n].reshape(-1).long()
        used[row[row >= 0]] = True
    kv.view(-1, d)[~used] = float("nan")
    k_cache = quant.quantize_k_cache(kv, layout)
    kv_deq = quant.dequantize_k_cache(k_cache, layout)

    extra_args, extra_ref = {}, None
    if with_extra:
        e_block, e_topk = 2, 64
        e_kv, e_table = make_paged(b, 96, e_block, d)
        e_abs = torch.stack([torch.randperm(96)[:e_topk] for _ in range(b * s_q)]).view(b, s_q, e_topk)
        e_indices = quant.abs_indices2indices_in_kvcache(e_abs.to(torch.int32), e_table, e_block)
        e_cache = quant.quantize_k_cache(e_kv, layout)
        e_len = torch.randint(0, e_topk + 1, (b,), dtype=torch.int32)
        extra_args = dict(extra_k_cache=e_cache, extra_indices_in_kvcache=e_indices,
                          extra_topk_length=e_len, topk_length=topk_length)
        extra_ref = (quant.dequantize_k_cache(e_cache, layout).view(-1, d).double(), e_indices, e_len)

    attn_sink = torch.randn(h_q)
    attn_sink[:3] = float("inf")
    attn_sink[3:6] = float("-inf")
    sm_scale = d ** -0.55
    sched_meta, num_splits = flash_mla.get_mla_metadata()
    for layer in range(2):  # the same sched_meta serves every layer of a decode step
        q = (torch.randn(b, s_q, h_q, d)).clamp(-1, 1).to(torch.bfloat16)
        out, lse = flash_mla.flash_mla_with_kvcache(
            q, k_cache, block_table, None, 512, sched_meta, num_splits,
            softmax_scale=sm_scale, is_fp8_kvcache=True, indices=indices, attn_sink=attn_sink,
            **extra_args)
        assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32
        assert lse.shape == (b, h_q, s_q)
        ref_out, ref_lse = ref_sparse_decode(q, kv_deq, indices, topk_length, attn_sink, sm_scale,
                                             extra_ref)
        check_is_allclose("out", out.float(), ref_out.to(torch.bfloat16).float(), 1e-3, 2.01 / 128, 5e-6)
        check_is_allclose("lse", lse, ref_lse, 1e-6, 8.01 / 65536, 1e-7)


def dense_decode_case(dtype=torch.bfloat16):
    """FlashMLA's dense decode runs in bf16 or fp16 (q and cache alike; out in q's dtype)."""
    b, s_q, h_q, h_kv, d, block_size = 2, 2, 16, 1, 576, 64
    cache_seqlens = torch.tensor([100, 37], dtype=torch.int32)
    kv, block_table = make_paged(b, 128, block_size, d)
    if dtype != torch.bfloat16:
        kv = (torch.randn(kv.shape) / 10).clamp(-1, 1).to(dtype)
    for i in range(b):
        for j in range(int(cache_seqlens[i]), block_table.shape[1] * block_size):
            kv[block_table[i, j // block_size], j % block_size] = float("nan")
    q = (torch.randn(b, s_q, h_q, d) / 10).clamp(-1, 1).to(dtype)
    sched_meta, num_splits = flash_mla.get_mla_metadata(cache_seqlens, s_q * h_q // h_kv, h_kv)
    out, lse = flash_mla.flash_mla_with_kvcache(q, kv, block_table, cache_seqlens, 512, sched_meta,
                                                num_splits, causal=True)
    assert out.dtype == dtype and lse.dtype == torch.float32
    ref_out = torch.zeros(b, s_q, h_q, 512, dtype=torch.float64)
    ref_lse = torch.zeros(b, h_q, s_q, dtype=torch.float64)
    for i in range(b):
        L = int(cache_seqlens[i])
        tok = torch.arange(L)
        keys = kv[block_table[i, tok // block_size].long(), tok % block_size, 0].double()
        for j in range(s_q):
            o, l, _ = attend(q[i, j].double(), keys[: L - (s_q - 1 - j)], d ** -0.5, 512, None)
            ref_out[i, j], ref_lse[i, :, j] = o, l
    check_is_allclose("dense out", out.float(), ref_out.to(dtype).float(), 8e-4, 2.01 / 128, 5e-6)
    check_is_allclose("dense lse", lse, ref_lse, 1e-6, 8.01 / 65536, 1e-7)


def sparse_prefill_case(d):
    s_q, s_kv, h_q, topk = 4, 200, 64, 128
    q = (torch.randn(s_q, h_q, d) / 10).to(torch.bfloat16)
    kv = (torch.randn(s_kv, 1, d) / 10).to(torch.bfloat16)
    indices = torch.stack([torch.randperm(s_kv)[:topk] for _ in range(s_q)]).view(s_q, 1, topk)
    indices[:, :, :4] = torch.tensor([-1, s_kv, 2147483647, -123456])
    indices = indices.to(torch.int32)
    topk_length = torch.tensor([128, 0, 77, 100], dtype=torch.int32)
    attn_sink = torch.randn(h_q)
    out, max_logits, lse = flash_mla.flash_mla_sparse_fwd(q, kv, indices, 0.5, 512, attn_sink,
                                                          topk_length)
    ref_out = torch.zeros(s_q, h_q, 512, dtype=torch.float64)
    ref_max = torch.zeros(s_q, h_q, dtype=torch.float64)
    ref_lse = torch.zeros(s_q, h_q, dtype=torch.float64)
    for i in range(s_q):
        row = indices[i, 0, : int(topk_length[i])].long()
        row = row[(row >= 0) & (row < s_kv)]
        o, l, m = attend(q[i].double(), kv[row, 0].double(), 0.5, 512, attn_sink)
        ref_out[i], ref_lse[i], ref_max[i] = o, l, m
    check_is_allclose("prefill out", out.float(), ref_out, 8e-4, 3.01 / 128, 7e-6)
    check_is_allclose("prefill max_logits", max_logits, ref_max, 1e-6, 2.01 / 65536, 1e-7)
    check_is_allclose("prefill lse", lse, ref_lse, 1e-6, 2.01 / 65536, 1e-7)


if __name__ == "__main__":
    sparse_decode_case(quant.FP8KVCacheLayout.V32_FP8Sparse, 64, 300, 128, 64, with_extra=False)
    sparse_decode_case(quant.FP8KVCacheLayout.MODEL1_FP8Sparse, 64, 300, 128, 61, with_extra=True)
    dense_decode_case(torch.bfloat16)
    dense_decode_case(torch.float16)
    sparse_prefill_case(576)
    sparse_prefill_case(512)
    print("flashmla_api_script: all checks passed")
