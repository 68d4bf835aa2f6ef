"""flash_mla_sparse_fwd (sparse prefill) against the float64 reference."""

import numpy as np
import pytest

import mla_ref
import openmla
from mla_ref import BF16, f64, non_contiguous, to_family, to_numpy


def make_case(rng, s_q, s_kv, h_q, h_kv, d, topk, *, lengths=False, sink=False, all_invalid=False):
    off_q, off_kv = rng.uniform(-0.05, 0.05, size=2)
    q = (rng.standard_normal((s_q, h_q, d)) / 10 + off_q).clip(-10, 10).astype(np.float32).astype(BF16)
    kv = (rng.standard_normal((s_kv, h_kv, d)) / 10 + off_kv).clip(-10, 10)
    pads = mla_ref.INVALID_PREFILL + [s_kv, 114514, 1919810, 2147480000, 2147483647]
    idx = mla_ref.randperm_rows(rng, s_q * h_kv, s_kv, topk, pads).reshape(s_q, h_kv, topk)
    mask = rng.random(idx.shape) < 0.1
    idx[mask] = rng.choice(pads, size=int(mask.sum()))
    if all_invalid:
        idx[: max(1, s_q // 3)] = -1
    topk_length = None
    if lengths:
        topk_length = np.minimum(rng.integers(0, max(topk + 1, 64), size=s_q), topk).astype(np.int32)
    # Every kv row not named by a valid slot below the length is NaN (including rows named only
    # past the length, which must not be read).
    used = np.zeros(s_kv, bool)
    for si in range(s_q):
        n = topk if topk_length is None else topk_length[si]
        row = idx[si, :, :n].reshape(-1)
        used[row[(row >= 0) & (row < s_kv)]] = True
    kv[~used] = np.nan
    sinks = mla_ref.sink_values(rng, h_q) if sink else None
    return q, kv.astype(np.float32).astype(BF16), idx.astype(np.int32), topk_length, sinks


def check(q, kv, idx, scale, topk_length, sink, out, max_logits, lse):
    s_q, h_q, _ = q.shape
    assert tuple(out.shape) == (s_q, h_q, 512)
    assert tuple(max_logits.shape) == (s_q, h_q) and tuple(lse.shape) == (s_q, h_q)
    assert to_numpy(out).dtype == BF16 and to_numpy(lse).dtype == np.float32
    ref_out, ref_max, ref_lse = mla_ref.sparse_prefill_ref(
        q.astype(np.float64), kv.astype(np.float64), idx, scale, topk_length, sink)
    mla_ref.check_close("out", f64(out), ref_out, mla_ref.TOL_PREFILL_OUT)
    mla_ref.check_close("max_logits", f64(max_logits), ref_max, mla_ref.TOL_PREFILL_STAT)
    mla_ref.check_close("lse", f64(lse), ref_lse, mla_ref.TOL_PREFILL_STAT)
    lonely = np.isposinf(ref_lse)
    assert (f64(out)[lonely] == 0).all() and np.isneginf(f64(max_logits)[lonely]).all()
    return lonely


def call(family, q, kv, idx, scale, topk_length=None, sink=None, noncontig=True, **kw):
    t = lambda a: None if a is None else to_family(a, family)
    nc = non_contiguous if noncontig else (lambda x: x)
    return openmla.flash_mla_sparse_fwd(nc(t(q)), nc(t(kv)), nc(t(idx)), scale, 512, t(sink),
                                        t(topk_length), **kw)


@pytest.mark.parametrize("d", [576, 512])
@pytest.mark.parametrize("s_q,s_kv,h_q,topk", [(3, 95, 16, 128), (5, 300, 64, 64), (4, 40, 8, 100)])
def test_sparse_prefill(family, rng, d, s_q, s_kv, h_q, topk):
    q, kv, idx, _, _ = make_case(rng, s_q, s_kv, h_q, 1, d, topk)
    res = call(family, q, kv, idx, 0.5)
    assert len(res) == 3
    check(q, kv, idx, 0.5, None, None, *res)


@pytest.mark.parametrize("d", [576, 512])
def test_sparse_prefill_sink_and_topk_length(family, rng, d):
    q, kv, idx, lens, sink = make_case(rng, 6, 200, 16, 1, d, 128, lengths=True, sink=True)
    lens[0] = 0
    lonely = check(q, kv, idx, 0.5, lens, sink, *call(family, q, kv, idx, 0.5, lens, sink))
    assert lonely[0].all()


def test_sparse_prefill_all_invalid_rows(family, rng):
    q, kv, idx, lens, sink = make_case(rng, 6, 64, 8, 1, 512, 128, lengths=True, sink=True,
                                       all_invalid=True)
    lonely = check(q, kv, idx, 0.3, lens, sink, *call(family, q, kv, idx, 0.3, lens, sink))
    assert lonely[:2].all()


def test_sparse_prefill_grouped_kv_heads(family, rng):
    # openmla extension: h_kv > 1, query head h uses kv head h // (h_q / h_kv) and its index row.
    q, kv, idx, _, _ = make_case(rng, 3, 70, 8, 2, 512, 64)
    check(q, kv, idx, 0.5, None, None, *call(family, q, kv, idx, 0.5))


def test_sparse_prefill_indexer_lse(family, rng):
    q, kv, idx, lens, _ = make_case(rng, 4, 120, 8, 1, 512, 128, lengths=True)
    out, mx, lse, lse_indexer = call(family, q, kv, idx, 0.5, lens, indexer_topk=64)
    check(q, kv, idx, 0.5, lens, None, out, mx, lse)
    _, _, ref = mla_ref.sparse_prefill_ref(q.astype(np.float64), kv.astype(np.float64),
                                           idx[:, :, :64], 0.5, np.minimum(lens, 64))
    mla_ref.check_close("lse_indexer", f64(lse_indexer), ref, mla_ref.TOL_PREFILL_STAT)


def test_sparse_prefill_outputs_in_place(family, rng):
    q, kv, idx, _, _ = make_case(rng, 3, 50, 4, 1, 576, 64)
    t = lambda a: to_family(a, family)
    out = t(np.zeros((3, 4, 512), BF16))
    mx = t(np.zeros((3, 4), np.float32))
    lse_buf = t(np.zeros((4, 3), np.float32))
    lse = lse_buf.T  # any strides are accepted
    res = call(family, q, kv, idx, 0.5, out=out, max_logits=mx, lse=lse)
    assert res[0] is out and res[1] is mx and res[2] is lse
    check(q, kv, idx, 0.5, None, None, *res)
    if family == "torch":
        assert res[0].data_ptr() == out.data_ptr()


def test_sparse_prefill_errors(rng):
    q, kv, idx, _, _ = make_case(rng, 2, 30, 4, 1, 576, 64)
    with pytest.raises(ValueError, match="softmax_scale"):  # sm_scale is required
        openmla.flash_mla_sparse_fwd(q, kv, idx, 0.0)
    with pytest.raises(ValueError, match="softmax_scale"):
        openmla.flash_mla_sparse_fwd(q, kv, idx, float("nan"))
    with pytest.raises(TypeError):
        openmla.flash_mla_sparse_fwd(q, kv, idx)  # missing sm_scale, as upstream
    with pytest.raises(TypeError, match="kv"):
        openmla.flash_mla_sparse_fwd(q, kv.astype(np.float32), idx, 0.5)
    with pytest.raises(ValueError, match="kv"):
        openmla.flash_mla_sparse_fwd(q, kv[:, :, :512], idx, 0.5)
    with pytest.raises(ValueError, match="topk_length"):
        openmla.flash_mla_sparse_fwd(q, kv, idx, 0.5, topk_length=np.array([1, 65], np.int32))
    with pytest.raises(ValueError, match="indices"):
        openmla.flash_mla_sparse_fwd(q, kv, idx[:1], 0.5)
    with pytest.raises(ValueError, match="contiguous"):
        openmla.flash_mla_sparse_fwd(q[:, :, ::2], kv, idx, 0.5)
    with pytest.raises(RuntimeError, match="head_dim_v"):
        openmla.flash_mla_sparse_fwd(q, kv, idx, 0.5, 256)
