"""torch.ops.openmla.*: schema, fake and autograd-registration checks (torch.library.opcheck),
torch.compile graphs holding the ops, zero-copy outputs, and agreement with the NumPy path.
Skipped without PyTorch (or with a torch too old for torch.library.opcheck)."""

import subprocess
import sys

import numpy as np
import pytest

import openmla

torch = pytest.importorskip("torch")
if not hasattr(torch.library, "opcheck"):
    pytest.skip("torch.library.opcheck needs torch >= 2.4", allow_module_level=True)

from openmla import torch_ops  # noqa: E402

ops = torch.ops.openmla
V32 = openmla.FP8KVCacheLayout.V32_FP8Sparse
MODEL1 = openmla.FP8KVCacheLayout.MODEL1_FP8Sparse


def bf16(gen, shape, scale=1.0):
    return (torch.randn(shape, generator=gen) * scale).clamp(-4, 4).to(torch.bfloat16)


def indices(gen, shape, slots):
    idx = torch.randint(0, slots, shape, generator=gen, dtype=torch.int32)
    idx[..., -3:] = -1
    return idx


def fp8_cache(gen, layout, num_blocks, page):
    """A quantised cache as uint8 (opcheck's schema check compares tensors with arithmetic that
    float8_e4m3fn lacks); the float8 view quantize_k_cache returns is tested in the graphs."""
    d = layout.get_meta()[0]
    return openmla.quantize_k_cache(bf16(gen, (num_blocks, page, 1, d), 0.1),
                                    layout).view(torch.uint8)


def sparse_decode_v32(gen):
    b, s_q, h_q, topk, page, nb = 2, 1, 8, 32, 16, 4
    return (bf16(gen, (b, s_q, h_q, 576)), fp8_cache(gen, V32, nb, page),
            indices(gen, (b, s_q, topk), nb * page), None, None, None, None, None, 576 ** -0.5, 512)


def sparse_decode_model1(gen):
    """MODEL1 with topk_length, a sink, and an extra cache of its own page size and lengths."""
    b, s_q, h_q, topk, page, nb = 2, 2, 8, 32, 16, 4
    e_topk, e_page, e_nb = 16, 8, 3
    return (bf16(gen, (b, s_q, h_q, 512)), fp8_cache(gen, MODEL1, nb, page),
            indices(gen, (b, s_q, topk), nb * page),
            torch.tensor([topk, 5], dtype=torch.int32), torch.randn(h_q, generator=gen),
            fp8_cache(gen, MODEL1, e_nb, e_page), indices(gen, (b, s_q, e_topk), e_nb * e_page),
            torch.tensor([3, e_topk], dtype=torch.int32), 512 ** -0.5, 512)


def dense_decode_bf16(gen):
    b, s_q, h_q, page, blocks_per_seq = 2, 2, 8, 16, 3
    block_table = torch.randperm(b * blocks_per_seq, generator=gen).to(torch.int32).view(b, -1)
    return (bf16(gen, (b, s_q, h_q, 576)), bf16(gen, (b * blocks_per_seq, page, 1, 576), 0.1),
            block_table, torch.tensor([40, 7], dtype=torch.int32), 576 ** -0.5, True, 512)


def sparse_prefill(gen):
    s_q, s_kv, h_q, topk = 4, 48, 8, 16
    return (bf16(gen, (s_q, h_q, 576)), bf16(gen, (s_kv, 1, 576), 0.1),
            indices(gen, (s_q, 1, topk), s_kv), torch.tensor([16, 0, 9, 3], dtype=torch.int32),
            torch.randn(h_q, generator=gen), 576 ** -0.5, 512)


def cache_write(gen):
    cache = openmla.empty_k_cache(4, 16, V32, like=torch.empty(0)).view(torch.uint8)
    slots = torch.tensor([3, -1, 17, 63, 40], dtype=torch.int64)
    return bf16(gen, (5, 576), 0.1), slots, "V32", cache


def quantize(gen):
    cache = openmla.empty_k_cache(3, 16, MODEL1, like=torch.empty(0)).view(torch.uint8)
    return bf16(gen, (3, 16, 1, 512), 0.1), "MODEL1", cache


def dequantize(gen):
    return fp8_cache(gen, V32, 3, 16), "V32"


def abs_indices(gen):
    block_table = torch.tensor([[2, 0], [1, 3]], dtype=torch.int32)
    return indices(gen, (2, 1, 8), 32), block_table, 16


FUNCTIONAL_CASES = {
    "sparse_decode": [sparse_decode_v32, sparse_decode_model1],
    "dense_decode": [dense_decode_bf16],
    "sparse_prefill": [sparse_prefill],
    "dequantize_kv_cache": [dequantize],
    "abs_indices_to_cache_indices": [abs_indices],
}
WRITING_CASES = {"write_kv_tokens": cache_write, "quantize_kv_cache": quantize}


def functional_params():
    return [pytest.param(name, make, id=f"{name}-{make.__name__}")
            for name, makes in FUNCTIONAL_CASES.items() for make in makes]


def test_every_op_has_a_case():
    assert set(torch_ops.OP_NAMES) == (set(FUNCTIONAL_CASES) | set(WRITING_CASES)
                                       | {n + "_out" for n in FUNCTIONAL_CASES})


@pytest.mark.parametrize("name,make", functional_params())
def test_opcheck_functional_and_out(name, make):
    gen = torch.Generator().manual_seed(0)
    args = make(gen)
    torch.library.opcheck(getattr(ops, name).default, args)
    outputs = getattr(ops, name)(*args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    written = tuple(torch.full_like(o, 7) for o in outputs)
    torch.library.opcheck(getattr(ops, name + "_out").default, args + written)
    getattr(ops, name + "_out")(*args, *written)
    for o, w in zip(outputs, written):
        assert torch.equal(o, w), name


@pytest.mark.parametrize("name", sorted(WRITING_CASES))
def test_opcheck_writing(name):
    args = WRITING_CASES[name](torch.Generator().manual_seed(1))
    torch.library.opcheck(getattr(ops, name).default, args)


def test_write_kv_tokens_matches_quantize():
    gen = torch.Generator().manual_seed(2)
    latents, slots, fmt, cache = cache_write(gen)
    ops.write_kv_tokens(latents, slots, fmt, cache)
    full = torch.zeros(4 * 16, 576, dtype=torch.bfloat16)
    full[slots[slots >= 0]] = latents[slots >= 0]
    want = openmla.quantize_k_cache(full.view(4, 16, 1, 576), V32).view(torch.uint8)
    for s in range(4 * 16):
        token = cache[s // 16, s % 16, 0]
        if s in slots.tolist():
            assert torch.equal(token, want[s // 16, s % 16, 0]), s
        else:
            assert not token.any(), s  # untouched


def test_sparse_decode_out_is_written_in_place():
    gen = torch.Generator().manual_seed(3)
    q, cache, idx, *_ = sparse_decode_v32(gen)
    b, s_q, h_q = q.shape[:3]
    out = torch.full((b, s_q, h_q, 512), float("nan"), dtype=torch.bfloat16)
    lse = torch.full((b, s_q, h_q), float("nan")).transpose(1, 2)
    ptrs = (out.data_ptr(), lse.data_ptr())
    meta, _ = openmla.get_mla_metadata()
    got = openmla.flash_mla_with_kvcache(q, cache, None, None, 512, meta, is_fp8_kvcache=True,
                                         indices=idx, out=out, lse=lse)
    assert got[0] is out and got[1] is lse and (out.data_ptr(), lse.data_ptr()) == ptrs
    assert not out.isnan().any() and not lse.isnan().any()
    want_out, want_lse = ops.sparse_decode(q, cache, idx, None, None, None, None, None,
                                           576 ** -0.5, 512)
    assert torch.equal(out, want_out) and torch.equal(lse, want_lse)
    assert want_lse.stride() == (s_q * h_q, 1, h_q)  # FlashMLA's transposed lse


@pytest.mark.parametrize("make", [sparse_decode_v32, sparse_decode_model1, dense_decode_bf16])
def test_torch_path_matches_numpy_path_bitwise(make):
    args = make(torch.Generator().manual_seed(4))
    sparse = make is not dense_decode_bf16
    q, cache = args[0], args[1]
    if sparse:
        kwargs = dict(indices=args[2], topk_length=args[3], attn_sink=args[4],
                      extra_k_cache=args[5], extra_indices_in_kvcache=args[6],
                      extra_topk_length=args[7], is_fp8_kvcache=True)
    else:
        kwargs = dict(block_table=args[2], cache_seqlens=args[3], causal=True)

    def run(convert):
        meta, _ = openmla.get_mla_metadata()
        conv = {k: convert(v) for k, v in kwargs.items()}
        block_table, seqlens = conv.pop("block_table", None), conv.pop("cache_seqlens", None)
        return openmla.flash_mla_with_kvcache(convert(q), convert(cache), block_table, seqlens,
                                              512, meta, **conv)

    t_out, t_lse = run(lambda x: x)
    n_out, n_lse = run(to_numpy)
    assert np.array_equal(to_numpy(t_out).view(np.uint16), n_out.view(np.uint16))
    assert np.array_equal(to_numpy(t_lse), n_lse, equal_nan=True)


def to_numpy(x):
    """A NumPy array sharing x's memory (bfloat16 / float8 through ml_dtypes); other values as is."""
    if not isinstance(x, torch.Tensor):
        return x
    import ml_dtypes

    if x.dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    if x.dtype == torch.float8_e4m3fn:
        return x.view(torch.uint8).numpy()
    return x.numpy()


class OpCounter:
    """A torch.compile backend that records the openmla ops in each captured graph."""

    def __init__(self):
        self.targets = []

    def __call__(self, gm, example_inputs):
        self.targets += [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
        return gm.forward


def test_compiled_flash_mla_with_kvcache_matches_eager_bitwise():
    torch._dynamo.reset()
    q, cache, idx, lengths, sink, e_cache, e_idx, e_lengths, _, _ = sparse_decode_model1(
        torch.Generator().manual_seed(5))
    cache = cache.view(torch.float8_e4m3fn)  # as quantize_k_cache returns it

    def step(q, cache, idx, sink):
        meta, _ = openmla.get_mla_metadata()
        out, lse = openmla.flash_mla_with_kvcache(q, cache, None, None, 512, meta,
                                                  is_fp8_kvcache=True, indices=idx,
                                                  attn_sink=sink)
        return out.float() * 2, lse

    counter = OpCounter()
    compiled = torch.compile(step, backend=counter, fullgraph=True)
    got, want = compiled(q, cache, idx, sink), step(q, cache, idx, sink)
    calls = [t for t in counter.targets if t.startswith("openmla.")]
    assert calls in (["openmla.sparse_decode"], ["openmla.sparse_decode.default"]), calls
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_compiled_out_variant_and_prefill_with_aot_autograd():
    torch._dynamo.reset()
    args = sparse_prefill(torch.Generator().manual_seed(6))
    q, kv, idx, lengths, sink, scale, d_v = args

    def prefill(q, kv, idx, lengths, sink, out):
        o, m, lse = openmla.flash_mla_sparse_fwd(q, kv, idx, scale, d_v, sink, lengths, out=out)
        return m + 1, lse

    out_c = torch.empty(q.shape[0], q.shape[1], d_v, dtype=torch.bfloat16)
    out_e = torch.empty_like(out_c)
    got = torch.compile(prefill, backend="aot_eager", fullgraph=True)(q, kv, idx, lengths, sink,
                                                                      out_c)
    want = prefill(q, kv, idx, lengths, sink, out_e)
    assert torch.equal(out_c, out_e) and all(torch.equal(g, w) for g, w in zip(got, want))


def test_dense_decode_compiles_with_dynamic_batch():
    torch._dynamo.reset()
    q, cache, table, seqlens, scale, causal, d_v = dense_decode_bf16(torch.Generator().manual_seed(7))

    def decode(q, table, seqlens):
        return ops.dense_decode(q, cache, table, seqlens, scale, causal, d_v)

    compiled = torch.compile(decode, backend="aot_eager", dynamic=True, fullgraph=True)
    for b in (2, 1):
        got, want = compiled(q[:b], table[:b], seqlens[:b]), decode(q[:b], table[:b], seqlens[:b])
        assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_import_openmla_alone_does_not_import_torch():
    code = "import sys, openmla; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
