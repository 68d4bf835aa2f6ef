"""quantize_k_cache / dequantize_k_cache / abs_indices conversion against the NumPy encoder and
decoder of mla_ref (written from the format description), byte for byte."""

import numpy as np
import pytest

import mla_ref
import openmla
from mla_ref import BF16, MODEL1, V32, to_family, to_numpy

LAYOUTS = [openmla.FP8KVCacheLayout.V32_FP8Sparse, openmla.FP8KVCacheLayout.MODEL1_FP8Sparse]


def make_latents(rng, nb, page, layout, nan_tokens=0):
    d = mla_ref.GEOMETRY[layout.value][0]
    x = mla_ref.randn_bf16(rng, (nb, page, 1, d), 0.1, 1.0).astype(np.float32)
    # Wide dynamic range per tile, tiny values (e4m3 subnormals / flush to zero), exact zeros.
    x[..., :64] *= 40.0
    x[0, 0, 0, :] = 0.0
    if page > 1:
        x[0, 1, 0, :] *= 1e-6
    flat = x.reshape(nb * page, d)
    for t in rng.choice(nb * page, size=nan_tokens, replace=False):
        flat[t] = np.nan
    return flat.reshape(nb, page, 1, d).astype(BF16)


@pytest.mark.parametrize("layout", LAYOUTS, ids=["v32", "model1"])
@pytest.mark.parametrize("page", [1, 2, 53, 64])
def test_quantize_layout_and_bytes(family, rng, layout, page):
    nb = 3
    x = make_latents(rng, nb, page, layout)
    cache = openmla.quantize_k_cache(to_family(x, family), layout)
    bpt = mla_ref.GEOMETRY[layout.value][4]
    assert tuple(cache.shape) == (nb, page, 1, bpt)
    if family == "torch":
        import torch
        assert cache.dtype == torch.float8_e4m3fn
        strides = tuple(cache.stride())
    else:
        assert cache.dtype == np.uint8
        strides = tuple(s // cache.itemsize for s in cache.strides)
    if layout.value == V32:
        assert strides[0] == (page + 1) * 656 and strides[1] == 656 and strides[3] == 1
    else:
        assert strides[0] == (584 * page + 575) // 576 * 576 and strides[1] == 584
    got = mla_ref.cache_pages(cache)
    want = mla_ref.encode_cache(x, layout.value)
    if layout.value == MODEL1:
        # The pad byte of each 8-byte scale record is unspecified upstream (openmla zeroes it).
        scale_part = np.arange(got.shape[1]) >= page * 576
        pad = scale_part & ((np.arange(got.shape[1]) - page * 576) % 8 == 7)
        assert (got[:, pad] == 0).all()
        got, want = got[:, ~pad], want[:, ~pad]
    assert np.array_equal(got, want)


@pytest.mark.parametrize("layout", LAYOUTS, ids=["v32", "model1"])
def test_quantize_nan_tokens_poison_their_record(family, rng, layout):
    nb, page = 2, 8
    x = make_latents(rng, nb, page, layout, nan_tokens=3)
    cache = openmla.quantize_k_cache(to_family(x, family), layout)
    keys = mla_ref.decode_cache(cache, layout.value).reshape(nb * page, -1)
    lat = x.astype(np.float64).reshape(nb * page, -1)
    nan_tok = np.isnan(lat).all(axis=1)
    d_nope = mla_ref.GEOMETRY[layout.value][1]
    assert np.isnan(keys[nan_tok][:, :d_nope]).all()
    assert np.isnan(keys[nan_tok][:, d_nope:]).all()  # RoPE copied verbatim
    assert not np.isnan(keys[~nan_tok]).any()
    # The other tokens are byte-exact.
    rec_want = mla_ref.encode_cache(np.where(np.isnan(x.astype(np.float32)), 0, x).astype(BF16),
                                    layout.value)
    got = mla_ref.cache_pages(cache)
    if layout.value == V32:
        tok_bytes = got.reshape(nb * page, 656)[~nan_tok]
        assert np.array_equal(tok_bytes, rec_want.reshape(nb * page, 656)[~nan_tok])


@pytest.mark.parametrize("layout", LAYOUTS, ids=["v32", "model1"])
def test_dequantize_matches_reference_decoder(family, rng, layout):
    nb, page = 3, 7
    x = make_latents(rng, nb, page, layout)
    cache = openmla.quantize_k_cache(to_family(x, family), layout)
    deq = openmla.dequantize_k_cache(cache, layout)
    d = mla_ref.GEOMETRY[layout.value][0]
    assert tuple(deq.shape) == (nb, page, 1, d)
    got = to_numpy(deq)
    assert got.dtype == BF16
    want = mla_ref.decode_cache(cache, layout.value)
    assert np.array_equal(got.astype(np.float64).reshape(nb, page, d), want)
    # Quantisation error: half an e4m3 step (2^-4 relative), plus the subnormal grid near 0.
    err = np.abs(got.astype(np.float64) - x.astype(np.float64))
    assert (err <= np.abs(x.astype(np.float64)) * 2.0 ** -4 + 1e-3).all()


@pytest.mark.parametrize("layout", LAYOUTS, ids=["v32", "model1"])
def test_quantize_accepts_upstream_style_layouts_and_non_contiguous_input(rng, layout):
    nb, page = 2, 5
    x = make_latents(rng, nb, page, layout)
    want = mla_ref.cache_pages(openmla.quantize_k_cache(x, layout))
    for spec in (layout.value, layout.name, layout):
        got = mla_ref.cache_pages(openmla.quantize_k_cache(mla_ref.non_contiguous(x), spec))
        assert np.array_equal(got, want)


def test_quantize_out_is_written_in_place(family, rng):
    layout = openmla.FP8KVCacheLayout.V32_FP8Sparse
    x = to_family(make_latents(rng, 2, 4, layout), family)
    like = x if family == "torch" else None
    out = openmla.empty_k_cache(2, 4, layout, like=like)
    res = openmla.quantize_k_cache(x, layout, out=out)
    assert res is out
    assert np.array_equal(mla_ref.cache_pages(out),
                          mla_ref.cache_pages(openmla.quantize_k_cache(x, layout)))
    deq = openmla.FP8KVCacheLayout.V32_FP8Sparse.get_meta()[0]
    dst = to_family(np.zeros((2, 4, 1, deq), BF16), family)
    assert openmla.dequantize_k_cache(out, layout, out=dst) is dst
    assert np.array_equal(to_numpy(dst).astype(np.float64).reshape(2, 4, deq),
                          mla_ref.decode_cache(out, V32))


def test_quantize_errors(rng):
    layout = openmla.FP8KVCacheLayout.V32_FP8Sparse
    with pytest.raises(ValueError, match="head_dim"):  # wrong d for the layout
        openmla.quantize_k_cache(np.zeros((2, 4, 1, 512), BF16), layout)
    with pytest.raises(TypeError, match="dtype"):
        openmla.quantize_k_cache(np.zeros((2, 4, 1, 576), np.float32), layout)
    with pytest.raises(ValueError):
        openmla.quantize_k_cache(np.zeros((4, 576), BF16), layout)
    with pytest.raises(NotImplementedError):
        openmla.quantize_k_cache(np.zeros((2, 4, 1, 576), BF16), 7)
    with pytest.raises(ValueError):  # h_k must be 1
        openmla.quantize_k_cache(np.zeros((2, 4, 2, 576), BF16), layout)


def abs_to_cache_ref(abs_idx, table, page):
    out = np.full(abs_idx.shape, -1, np.int64)
    b = abs_idx.shape[0]
    for i in range(b):
        a = abs_idx[i]
        ok = (a >= 0) & (a // page < table.shape[1])
        blk = table[i][np.where(ok, a // page, 0)]
        out[i] = np.where(ok & (blk >= 0), blk * page + a % page, -1)
    return out.astype(np.int32)


def test_abs_indices_to_cache_indices(family, rng):
    b, s_q, topk, page, max_blocks = 3, 2, 40, 16, 5
    table = np.stack([rng.permutation(20)[:max_blocks] for _ in range(b)]).astype(np.int32)
    abs_idx = rng.integers(0, page * max_blocks, (b, s_q, topk)).astype(np.int32)
    abs_idx[0, 0, :5] = -1
    abs_idx[1, 1, 3] = -7  # other negatives: invalid as well
    abs_idx[2, 0, 4] = page * max_blocks + 3  # beyond the block table
    want = abs_to_cache_ref(abs_idx, table, page)
    t_abs, t_table = to_family(abs_idx, family), to_family(table, family)
    for fn in (openmla.abs_indices_to_cache_indices, openmla.abs_indices2indices_in_kvcache):
        got = fn(mla_ref.non_contiguous(t_abs), mla_ref.non_contiguous(t_table), page)
        assert np.array_equal(to_numpy(got), want)
        assert to_numpy(got).dtype == np.int32
    out = to_family(np.zeros_like(abs_idx), family)
    assert openmla.abs_indices_to_cache_indices(t_abs, t_table, page, out=out) is out
    assert np.array_equal(to_numpy(out), want)


def test_layout_table_of_the_binding_matches_the_format_description():
    """The record offsets quant.py takes from the C++ table (`_openmla.kv_layout()`) against
    mla_ref's GEOMETRY (written from the format description) and the README's byte map."""
    t = openmla._openmla.kv_layout()
    for layout, prefix in zip(LAYOUTS, ["v32_", "model1_"]):
        d, d_nope, tile, num_tiles, bpt = mla_ref.GEOMETRY[layout.value]
        assert layout.get_meta() == (d, d_nope, 64, tile, num_tiles)
        assert (t[prefix + "head_dim"], t[prefix + "nope_dim"]) == (d, d_nope)
        assert (t[prefix + "tile"], t[prefix + "num_tiles"], t["rope_dim"]) == (tile, num_tiles, 64)
    assert (t["v32_scales_offset"], t["v32_rope_offset"], t["v32_record_bytes"]) == (512, 528, 656)
    assert (t["model1_rope_offset"], t["model1_record_bytes"], t["model1_scale_bytes"]) == (
        448, 576, 8)
    assert t["model1_view_bytes"] == mla_ref.GEOMETRY[MODEL1][4] == 584
    assert t["v32_record_bytes"] == mla_ref.GEOMETRY[V32][4]
    assert t["model1_page_align"] == 576
