"""flash_mla_with_kvcache with indices (sparse decode) against the float64 reference."""

import math

import numpy as np
import pytest

import mla_ref
import openmla
from mla_ref import BF16, MODEL1, V32, f64, non_contiguous, to_family, to_numpy

LAYOUT = {V32: openmla.FP8KVCacheLayout.V32_FP8Sparse, MODEL1: openmla.FP8KVCacheLayout.MODEL1_FP8Sparse}
BAD_INDICES = [-1, -2, -2147483648, None, 2147483647]  # None: num_slots (one past the end)


def make_indices(rng, b, s_q, topk, num_slots, lengths, *, bad_fraction=0.1, dups=False):
    idx = mla_ref.randperm_rows(rng, b * s_q, num_slots, topk, [-1]).reshape(b, s_q, topk)
    mask = rng.random(idx.shape) < bad_fraction
    bad = [num_slots if v is None else v for v in BAD_INDICES]
    idx[mask] = rng.choice(bad, size=int(mask.sum()))
    if dups and topk >= 4:
        idx[:, :, 1] = idx[:, :, 0]
        idx[:, :, 3] = idx[:, :, 0]
    if lengths is not None:
        # Slots past the length hold garbage that must never be read (here: in-range slots).
        for bi in range(b):
            idx[bi, :, lengths[bi]:] = rng.integers(0, num_slots, size=(s_q, topk - lengths[bi]))
    return idx.astype(np.int32)


def referenced(idx, lengths, num_slots):
    used = np.zeros(num_slots, bool)
    for bi in range(idx.shape[0]):
        n = idx.shape[2] if lengths is None else lengths[bi]
        row = idx[bi, :, :n].reshape(-1).astype(np.int64)
        used[row[(row >= 0) & (row < num_slots)]] = True
    return used


def make_cache(rng, family, layout, num_blocks, page, used):
    d = mla_ref.GEOMETRY[layout][0]
    lat = mla_ref.randn_bf16(rng, (num_blocks, page, 1, d), 0.1, 1.0).astype(np.float32)
    lat.reshape(num_blocks * page, d)[~used] = np.nan  # every unreferenced token is NaN
    cache = openmla.quantize_k_cache(to_family(lat.astype(BF16), family), LAYOUT[layout])
    keys = mla_ref.decode_cache(cache, layout).reshape(num_blocks * page, d)
    return cache, keys


class Case:
    def __init__(self, rng, family, layout, b=2, s_q=2, h_q=16, topk=64, page=64, num_blocks=4,
                 lengths=False, sink=False, extra=None, all_invalid=False, zero_lengths=False,
                 dups=False, scale=None, noncontig=True):
        self.family = family
        d = mla_ref.GEOMETRY[layout][0]
        slots = num_blocks * page
        self.topk_length = None
        if lengths:
            self.topk_length = rng.integers(0, topk + 1, size=b).astype(np.int32)
            if zero_lengths:
                self.topk_length[rng.random(b) < 0.5] = 0
        self.indices = make_indices(rng, b, s_q, topk, slots, self.topk_length, dups=dups)
        if all_invalid:
            self.indices[0] = -1
        self.cache, self.keys = make_cache(rng, family, layout, num_blocks, page,
                                           referenced(self.indices, self.topk_length, slots))
        self.extra = None
        if extra is not None:
            e_topk, e_page, e_blocks, e_lengths = extra
            e_slots = e_page * e_blocks
            self.extra_length = (rng.integers(0, e_topk + 1, size=b).astype(np.int32)
                                 if e_lengths else None)
            self.extra_indices = make_indices(rng, b, s_q, e_topk, e_slots, self.extra_length)
            if all_invalid:
                self.extra_indices[0] = -1
            self.extra_cache, self.extra_keys = make_cache(
                rng, family, layout, e_blocks, e_page,
                referenced(self.extra_indices, self.extra_length, e_slots))
            self.extra = True
        self.q = mla_ref.randn_bf16(rng, (b, s_q, h_q, d), 1.0, 1.0)
        self.sink = mla_ref.sink_values(rng, h_q) if sink else None
        self.scale = scale
        self.noncontig = noncontig

    def arr(self, a):
        if a is None:
            return None
        x = to_family(a, self.family)
        return non_contiguous(x) if (self.noncontig and x.ndim >= 2) else x

    def kwargs(self):
        kw = dict(indices=self.arr(self.indices), is_fp8_kvcache=True)
        if self.topk_length is not None:
            kw["topk_length"] = to_family(self.topk_length, self.family)
        if self.sink is not None:
            kw["attn_sink"] = to_family(self.sink, self.family)
        if self.extra:
            kw["extra_k_cache"] = self.extra_cache
            kw["extra_indices_in_kvcache"] = self.arr(self.extra_indices)
            if self.extra_length is not None:
                kw["extra_topk_length"] = to_family(self.extra_length, self.family)
        if self.scale is not None:
            kw["softmax_scale"] = self.scale
        return kw

    def run(self, sched_meta=None, **extra_kw):
        meta = sched_meta or openmla.get_mla_metadata()[0]
        return openmla.flash_mla_with_kvcache(self.arr(self.q), self.cache, None, None, 512, meta,
                                              **self.kwargs(), **extra_kw)

    def reference(self):
        return mla_ref.sparse_decode_ref(
            self.q.astype(np.float64), self.keys, self.indices, self.topk_length, self.sink,
            self.extra_keys if self.extra else None,
            self.extra_indices if self.extra else None,
            self.extra_length if self.extra else None, scale=self.scale)

    def check(self, out, lse):
        b, s_q, h_q, _ = self.q.shape
        assert tuple(out.shape) == (b, s_q, h_q, 512) and tuple(lse.shape) == (b, h_q, s_q)
        assert to_numpy(out).dtype == BF16 and to_numpy(lse).dtype == np.float32
        ref_out, ref_lse = self.reference()
        got_out, got_lse = f64(out), f64(lse)
        mla_ref.check_close("out", got_out, mla_ref.bf16_round(ref_out), mla_ref.TOL_DECODE_OUT)
        mla_ref.check_close("lse", got_lse, ref_lse, mla_ref.TOL_DECODE_LSE)
        lonely = np.isposinf(ref_lse).transpose(0, 2, 1)  # [b, s_q, h_q]
        assert (got_out[lonely] == 0).all()
        return lonely


def lse_strides(lse):
    if mla_ref.is_torch(lse):
        return tuple(lse.stride())
    return tuple(s // 4 for s in lse.strides)


@pytest.mark.parametrize("layout", [V32, MODEL1], ids=["v32", "model1"])
def test_basic_with_sink_and_noncontiguous_inputs(family, rng, layout):
    c = Case(rng, family, layout, sink=True, scale=mla_ref.GEOMETRY[layout][0] ** -0.55)
    out, lse = c.run()
    c.check(out, lse)
    b, s_q, h_q = c.q.shape[:3]
    assert lse_strides(lse) == (s_q * h_q, 1, h_q)  # transposed view of [b, s_q, h_q]


@pytest.mark.parametrize("layout", [V32, MODEL1], ids=["v32", "model1"])
def test_odd_pages_topk_and_heads(family, rng, layout):
    c = Case(rng, family, layout, b=3, s_q=1, h_q=3, topk=100, page=61, num_blocks=3)
    c.check(*c.run())


def test_model1_topk_length_and_extra_cache(family, rng):
    c = Case(rng, family, MODEL1, b=3, s_q=2, h_q=16, topk=64, page=64, num_blocks=3,
             lengths=True, sink=True, extra=(128, 2, 100, True))
    c.check(*c.run())


def test_v32_topk_length_and_extra_cache(family, rng):
    # FlashMLA's SM90 kernels refuse these for V3.2; openmla serves them.
    c = Case(rng, family, V32, b=2, s_q=2, h_q=8, topk=64, page=53, num_blocks=3,
             lengths=True, extra=(64, 69, 2, False))
    c.check(*c.run())


@pytest.mark.parametrize("layout", [V32, MODEL1], ids=["v32", "model1"])
def test_lonely_rows_give_zero_and_inf_lse_whatever_the_sink(family, rng, layout):
    c = Case(rng, family, layout, b=4, s_q=2, h_q=8, topk=64, page=64, num_blocks=2, lengths=True,
             zero_lengths=True, all_invalid=True, sink=True,
             extra=(64, 2, 64, True) if layout == MODEL1 else None)
    c.topk_length[1] = 0
    if c.extra:
        c.extra_length[1] = 0
    lonely = c.check(*c.run())
    assert lonely[0].all() and lonely[1].all()


@pytest.mark.parametrize("layout", [V32, MODEL1], ids=["v32", "model1"])
def test_zero_size_problems(family, rng, layout):
    # No request at all; then top-k 0: V3.2 rows are all lonely, MODEL1 rows see the extra cache.
    c = Case(rng, family, layout, b=0, sink=True)
    c.check(*c.run())
    c = Case(rng, family, layout, topk=0, sink=True,
             extra=(16, 64, 2, False) if layout == MODEL1 else None)
    lonely = c.check(*c.run())
    assert lonely.all() if layout == V32 else not lonely.any()


def test_duplicate_indices_count_twice(family, rng):
    c = Case(rng, family, V32, b=1, s_q=1, h_q=4, topk=8, page=16, num_blocks=1, dups=True)
    c.indices[0, 0, :] = [3, 3, 3, 5, -1, -1, -1, -1]
    c.cache, c.keys = make_cache(rng, family, V32, 1, 16, np.ones(16, bool))
    out, lse = c.run()
    c.check(out, lse)
    k3, k5 = c.keys[3], c.keys[5]
    q = c.q[0, 0, 0].astype(np.float64)
    s3, s5 = q @ k3 / 24, q @ k5 / 24
    assert f64(lse)[0, 0, 0] == pytest.approx(math.log(3 * math.exp(s3) + math.exp(s5)), rel=1e-5)


def test_bf16_cache_sparse_decode(family, rng):
    # openmla extension: sparse decode over a plain bf16 cache [blocks, page, 1, d].
    b, s_q, h_q, topk, page, nb = 2, 1, 8, 32, 16, 4
    idx = make_indices(rng, b, s_q, topk, nb * page, None)
    kv = mla_ref.randn_bf16(rng, (nb, page, 1, 512), 0.1, 1.0)
    q = mla_ref.randn_bf16(rng, (b, s_q, h_q, 512), 1.0, 1.0)
    meta, _ = openmla.get_mla_metadata()
    out, lse = openmla.flash_mla_with_kvcache(to_family(q, family), to_family(kv, family), None,
                                              None, 512, meta, indices=to_family(idx, family))
    ref_out, ref_lse = mla_ref.sparse_decode_ref(q.astype(np.float64),
                                                 kv.astype(np.float64).reshape(nb * page, 512), idx)
    mla_ref.check_close("out", f64(out), mla_ref.bf16_round(ref_out), mla_ref.TOL_DECODE_OUT)
    mla_ref.check_close("lse", f64(lse), ref_lse, mla_ref.TOL_DECODE_LSE)


def test_sched_meta_reuse_across_layers_and_consistency(family, rng):
    meta, splits = openmla.get_mla_metadata(None, 16, 1, 16, True, 64)  # old positional form
    assert splits is None and not meta.have_initialized
    layers = [Case(rng, family, MODEL1, lengths=True, sink=True) for _ in range(2)]
    for c in layers:
        c.check(*c.run(meta))
        assert meta.have_initialized and meta.config.topk == 64
    first_plan = meta.plan
    layers[0].check(*layers[0].run(meta))
    assert meta.plan is first_plan  # the plan is made once and reused
    other = Case(rng, family, MODEL1, topk=128)
    with pytest.raises(AssertionError, match="inconsistent with sched_meta"):
        other.run(meta)
    other = Case(rng, family, MODEL1, s_q=1)
    with pytest.raises(AssertionError, match="inconsistent with sched_meta"):
        other.run(meta)


def test_out_and_lse_are_written_in_place(family, rng):
    c = Case(rng, family, V32, b=2, s_q=3, h_q=4, sink=True)
    b, s_q, h_q = 2, 3, 4
    out = to_family(np.full((b, s_q, h_q, 512), np.nan, np.float32).astype(BF16), family)
    lse_buf = to_family(np.full((b, s_q, h_q), np.nan, np.float32), family)
    lse = lse_buf.transpose(1, 2) if family == "torch" else lse_buf.swapaxes(1, 2)
    got_out, got_lse = c.run(out=out, lse=lse)
    assert got_out is out and got_lse is lse
    c.check(out, lse)
    assert not np.isnan(f64(lse_buf)).any()


def test_interface_assertions(rng):
    c = Case(rng, "numpy", V32, noncontig=False)
    meta, _ = openmla.get_mla_metadata()
    with pytest.raises(AssertionError):
        openmla.flash_mla_with_kvcache(c.q, c.cache, None, None, 512, meta, np.zeros(1),
                                       **c.kwargs())
    with pytest.raises(AssertionError):
        openmla.flash_mla_with_kvcache(c.q, c.cache, None, None, 512, object(), **c.kwargs())
    with pytest.raises(AssertionError):
        openmla.flash_mla_with_kvcache(c.q, c.cache, None, None, 512, meta, causal=True,
                                       **c.kwargs())
    kw = c.kwargs()
    kw["is_fp8_kvcache"] = False
    with pytest.raises(AssertionError):
        openmla.flash_mla_with_kvcache(c.q, c.cache, None, None, 512, meta, **kw)
    assert not meta.have_initialized  # failed calls leave the sched_meta untouched


def test_library_errors_become_python_exceptions(rng):
    c = Case(rng, "numpy", V32, lengths=True, noncontig=False)
    meta = openmla.get_mla_metadata()[0]

    def call(**over):
        kw = c.kwargs()
        q = over.pop("q", c.q)
        cache = over.pop("cache", c.cache)
        hdv = over.pop("head_dim_v", 512)
        kw.update(over)
        return openmla.flash_mla_with_kvcache(q, cache, None, None, hdv, openmla.get_mla_metadata()[0], **kw)

    with pytest.raises(TypeError, match="indices"):
        call(indices=c.indices.astype(np.int64))
    with pytest.raises(TypeError, match="q"):
        call(q=c.q.astype(np.float32))
    with pytest.raises(ValueError, match="topk_length"):
        call(topk_length=np.full(2, 65, np.int32))
    with pytest.raises(ValueError, match="indices"):
        call(indices=c.indices[:, :1])
    with pytest.raises(RuntimeError, match="head_dim_v"):
        call(head_dim_v=256)
    with pytest.raises(ValueError, match="extra"):
        call(extra_indices_in_kvcache=c.indices)
    # A cache view whose token rows are not 656 bytes apart.
    bad = np.zeros((4, 64, 1, 700), np.uint8)[..., :656]
    with pytest.raises(ValueError, match="stride"):
        call(cache=bad)
    with pytest.raises(ValueError, match="attn_sink"):
        call(attn_sink=np.zeros(3, np.float32))
    # Read-only output array: refused by the binding before anything is written.
    out = np.zeros((2, 2, 16, 512), BF16)
    out.flags.writeable = False
    with pytest.raises(TypeError, match="out"):
        call(out=out)
    # Not an array at all.
    with pytest.raises(TypeError, match="topk_length"):
        call(topk_length="not an array")
    assert meta.config is None
