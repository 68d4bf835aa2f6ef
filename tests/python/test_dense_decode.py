"""flash_mla_with_kvcache without indices (dense decode) against the float64 reference."""

import numpy as np
import pytest

import mla_ref
import openmla
from mla_ref import BF16, MODEL1, V32, f64, non_contiguous, to_family

UNUSED_BLOCK = 2147480000


def make_case(rng, b, s_q, h_q, h_k, d, page, seqlens):
    """bf16 cache with NaN in every slot beyond each length and unused block-table entries set
    to 2147480000 (FlashMLA's dense-decode test inputs)."""
    max_blocks = max(1, max((int(n) + page - 1) // page for n in seqlens)) + 1
    num_blocks = b * max_blocks
    perm = rng.permutation(num_blocks)
    table = np.full((b, max_blocks), UNUSED_BLOCK, np.int64)
    cache = mla_ref.randn_bf16(rng, (num_blocks, page, h_k, d), 0.1, 1.0).astype(np.float32)
    poisoned = np.ones((num_blocks, page), bool)
    for bi, n in enumerate(seqlens):
        used = (int(n) + page - 1) // page
        table[bi, :used] = perm[bi * max_blocks: bi * max_blocks + used]
        for j in range(int(n)):
            poisoned[table[bi, j // page], j % page] = False
    cache[poisoned] = np.nan
    q = mla_ref.randn_bf16(rng, (b, s_q, h_q, d), 0.1, 1.0)
    return q, cache.astype(BF16), table.astype(np.int32), np.asarray(seqlens, np.int32)


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
