"""flash_mla_with_kvcache without indices (dense decode) against the float64 reference, with
bfloat16 and (as FlashMLA) float16 q / cache / out."""

import numpy as np
import pytest

import mla_ref
import openmla
from mla_ref import BF16, MODEL1, V32, f64, non_contiguous, to_family

UNUSED_BLOCK = 2147480000


def randn16(rng, shape, dtype):
    """randn / 10 clamped to [-1, 1] in `dtype` (BF16 or np.float16)."""
    x = np.clip(rng.standard_normal(shape) * 0.1, -1.0, 1.0)
    return x.astype(np.float32).astype(dtype)


def make_case(rng, b, s_q, h_q, h_k, d, page, seqlens, dtype=BF16):
    """Cache (bf16, or float16 with dtype=np.float16) with NaN in every slot beyond each length
    and unused block-table entries set to 2147480000 (FlashMLA's dense-decode test inputs)."""
    max_blocks = max(1, max((int(n) + page - 1) // page for n in seqlens)) + 1
    num_blocks = b * max_blocks
    perm = rng.permutation(num_blocks)
    table = np.full((b, max_blocks), UNUSED_BLOCK, np.int64)
    cache = randn16(rng, (num_blocks, page, h_k, d), dtype).astype(np.float32)
    poisoned = np.ones((num_blocks, page), bool)
    for bi, n in enumerate(seqlens):
        used = (int(n) + page - 1) // page
        table[bi, :used] = perm[bi * max_blocks: bi * max_blocks + used]
        for j in range(int(n)):
            poisoned[table[bi, j // page], j % page] = False
    cache[poisoned] = np.nan
    q = randn16(rng, (b, s_q, h_q, d), dtype)
    return q, cache.astype(dtype), table.astype(np.int32), np.asarray(seqlens, np.int32)


def run_and_check(family, q, cache, table, seqlens, causal, keys=None, scale=None, noncontig=True):
    t = lambda a: to_family(a, family)
    nc = non_contiguous if noncontig else (lambda x: x)
    meta, splits = openmla.get_mla_metadata()
    kw = {} if scale is None else {"softmax_scale": scale}
    k_cache = cache if keys is not None else nc(t(cache))
    out, lse = openmla.flash_mla_with_kvcache(nc(t(q)), k_cache, nc(t(table)), t(seqlens), 512,
                                              meta, splits, causal=causal,
                                              is_fp8_kvcache=keys is not None, **kw)
    b, s_q, h_q, _ = q.shape
    assert tuple(out.shape) == (b, s_q, h_q, 512) and tuple(lse.shape) == (b, h_q, s_q)
    ref_keys = keys if keys is not None else cache.astype(np.float64)
    ref_out, ref_lse = mla_ref.dense_decode_ref(q.astype(np.float64), ref_keys, table, seqlens,
                                                causal=causal, scale=scale)
    if q.dtype == np.float16:
        # Out in q's dtype, within one float16 step of the reference rounded once to float16
        # (bf16 anywhere on the way would miss by up to 8 steps).
        assert str(out.dtype) in ("float16", "torch.float16")
        ref16 = ref_out.astype(np.float16).astype(np.float64)
        mla_ref.check_close("out", f64(out), ref16, mla_ref.TOL_DENSE_OUT)
        mla_ref.check_close("out (fp16 step)", f64(out), ref16, (1e-6, 1.01 / 1024, 1e-7))
    else:
        mla_ref.check_close("out", f64(out), mla_ref.bf16_round(ref_out), mla_ref.TOL_DENSE_OUT)
    mla_ref.check_close("lse", f64(lse), ref_lse, mla_ref.TOL_DECODE_LSE)
    lonely = np.isposinf(ref_lse).transpose(0, 2, 1)
    assert (f64(out)[lonely] == 0).all()
    return out, lse, meta


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize("s_q,h_q,h_k", [(1, 4, 1), (3, 6, 2), (2, 9, 3)])
def test_dense_decode_bf16(family, rng, causal, s_q, h_q, h_k):
    seqlens = [int(x) for x in rng.integers(s_q, 150, size=3)]
    seqlens[1] = 0  # an empty request
    q, cache, table, lens = make_case(rng, 3, s_q, h_q, h_k, 576, 64, seqlens)
    out, lse, _ = run_and_check(family, q, cache, table, lens, causal)
    if family == "numpy":
        assert lse.flags.c_contiguous  # dense lse is a contiguous [b, h_q, s_q] buffer
    else:
        assert lse.is_contiguous()


def test_dense_decode_causal_lonely_rows(family, rng):
    # Length 1 with s_q 3: the first two queries see nothing (out 0, lse +inf).
    q, cache, table, lens = make_case(rng, 2, 3, 4, 1, 576, 64, [1, 2])
    run_and_check(family, q, cache, table, lens, True)


@pytest.mark.parametrize("page,d", [(16, 576), (64, 512)])
def test_dense_decode_other_pages_and_head_dims(family, rng, page, d):
    # openmla extensions: FlashMLA's dense decode needs page 64 and d 576.
    q, cache, table, lens = make_case(rng, 2, 2, 4, 1, d, page, [37, 70])
    run_and_check(family, q, cache, table, lens, False, scale=0.07)


@pytest.mark.parametrize("layout", [V32, MODEL1], ids=["v32", "model1"])
def test_dense_decode_fp8_cache(family, rng, layout):
    # openmla extension: dense decode over the FP8 sparse layouts.
    d = mla_ref.GEOMETRY[layout][0]
    q, cache, table, lens = make_case(rng, 2, 2, 8, 1, d, 64, [90, 5])
    lay = openmla.FP8KVCacheLayout(layout)
    fp8 = openmla.quantize_k_cache(to_family(cache, family), lay)
    keys = mla_ref.decode_cache(fp8, layout).reshape(cache.shape)
    run_and_check(family, q, fp8, table, lens, True, keys=keys)


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize("s_q,h_q,h_k,page", [(1, 16, 1, 64), (2, 128, 1, 61), (2, 8, 2, 64)])
def test_dense_decode_fp16(family, rng, causal, s_q, h_q, h_k, page):
    seqlens = [int(x) for x in rng.integers(s_q, 150, size=2)]
    q, cache, table, lens = make_case(rng, 2, s_q, h_q, h_k, 576, page, seqlens, np.float16)
    run_and_check(family, q, cache, table, lens, causal)


def test_dense_decode_fp16_single_token_lse_uses_fp16_q(family, rng):
    # One visible token: lse is the scaled dot product itself, so q read as anything but float16
    # (e.g. rounded to bfloat16) misses the lse tolerance.
    q, cache, table, lens = make_case(rng, 1, 1, 16, 1, 576, 64, [1], np.float16)
    run_and_check(family, q, cache, table, lens, False)


def test_dense_decode_fp16_dtype_errors(rng):
    q, cache, table, lens = make_case(rng, 2, 1, 4, 1, 576, 64, [10, 20], np.float16)
    fresh = lambda: openmla.get_mla_metadata()[0]
    with pytest.raises(TypeError, match="kv_cache"):  # float16 q needs a float16 cache
        openmla.flash_mla_with_kvcache(q, cache.astype(BF16), table, lens, 512, fresh())
    with pytest.raises(TypeError, match="kv_cache"):  # and bfloat16 q a bfloat16 one
        openmla.flash_mla_with_kvcache(q.astype(BF16), cache, table, lens, 512, fresh())
    with pytest.raises(TypeError, match="out"):  # out has q's dtype
        openmla.flash_mla_with_kvcache(q, cache, table, lens, 512, fresh(),
                                       out=np.zeros((2, 1, 4, 512), BF16))
    lay = openmla.FP8KVCacheLayout(V32)
    fp8 = openmla.quantize_k_cache(cache.astype(np.float32).astype(BF16), lay)
    with pytest.raises(TypeError, match="q"):  # FP8 caches (openmla extension) take bfloat16 q
        openmla.flash_mla_with_kvcache(q, fp8, table, lens, 512, fresh())
    # A sched_meta first used with bfloat16 serves float16 calls of the same shapes too.
    meta = fresh()
    openmla.flash_mla_with_kvcache(q.astype(BF16), cache.astype(BF16), table, lens, 512, meta)
    out, _ = openmla.flash_mla_with_kvcache(q, cache, table, lens, 512, meta)
    assert out.dtype == np.float16


def test_dense_decode_out_in_place_and_errors(rng):
    q, cache, table, lens = make_case(rng, 2, 1, 4, 1, 576, 64, [10, 20])
    meta, _ = openmla.get_mla_metadata()
    out = np.zeros((2, 1, 4, 512), BF16)
    lse = np.zeros((2, 4, 1), np.float32)
    res = openmla.flash_mla_with_kvcache(q, cache, table, lens, 512, meta, out=out, lse=lse)
    assert res[0] is out and res[1] is lse
    assert np.isfinite(f64(lse)).all() and np.abs(f64(out)).sum() > 0
    with pytest.raises(AssertionError, match="inconsistent with sched_meta"):
        openmla.flash_mla_with_kvcache(q, cache, table, lens, 512, meta, causal=True)
    fresh = lambda: openmla.get_mla_metadata()[0]
    with pytest.raises(AssertionError):  # dense path takes no sink
        openmla.flash_mla_with_kvcache(q, cache, table, lens, 512, fresh(),
                                       attn_sink=np.zeros(4, np.float32))
    with pytest.raises(AssertionError):
        openmla.flash_mla_with_kvcache(q, cache, None, lens, 512, fresh())
    with pytest.raises(ValueError, match="block_table"):  # a used entry names no page
        bad = table.copy()
        bad[0, 0] = UNUSED_BLOCK
        openmla.flash_mla_with_kvcache(q, cache, bad, lens, 512, fresh())
    with pytest.raises(ValueError, match="cache_seqlens"):  # longer than the block table
        openmla.flash_mla_with_kvcache(q, cache, table, np.array([10, 10000], np.int32), 512,
                                       fresh())
    with pytest.raises(TypeError, match="cache_seqlens"):
        openmla.flash_mla_with_kvcache(q, cache, table, lens.astype(np.int64), 512, fresh())
    with pytest.raises(ValueError, match="heads_kv"):
        openmla.flash_mla_with_kvcache(np.zeros((2, 1, 5, 576), BF16),
                                       np.zeros((4, 64, 2, 576), BF16), table, lens, 512, fresh())
    with pytest.raises(RuntimeError):  # head_dim 128 is not an MLA shape
        openmla.flash_mla_with_kvcache(np.zeros((2, 1, 4, 128), BF16),
                                       np.zeros((4, 64, 1, 128), BF16), table, lens, 512, fresh())
