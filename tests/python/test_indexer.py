"""The lightning indexer through the Python module against the independent float64 reference of
indexer_ref: cache bytes (FP8 132 B, FP4 68 B; page sizes 1 / 61 / 64, padded pages, vLLM's
3-D cache view), prefill and paged decode logits (next_n 1 / 2, context_lens [B] and
[B, next_n], length 0, heads 1 / 32 / 64, NaN-poisoned unused slots), top-k (ties to the lower
position, ascending, physical slots through the block table) and the fused paged top-k.

Tolerances: logits are fp32 sums of exact e4m3 x e4m3 (or e2m1) products, so each may differ
from the float64 value by 2e-5 times the sum of the absolute terms (plus 1e-30)."""

import numpy as np
import pytest

import indexer_ref as ref
import openmla
from mla_ref import E4M3, to_family, to_numpy

FORMATS = ["fp8", "fp4"]
LOGIT_RTOL = 2e-5


# Every 32-block has amax 6 (FP4 scale 1, FP8 scale 2^-6) and holds round-to-nearest-even ties
# of both formats: the e2m1 midpoints and 17/64, 19/64 (e4m3 steps of 2/64 there).
TIE_BLOCK = [6, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, -0.75, -1.75, -3.5, -0.25, 17 / 64, 19 / 64,
             -17 / 64, -19 / 64] + [0] * 16


def random_keys(rng, n):
    """Keys [n, 128] with a different magnitude per token; token 1 is zero, token 2 all ties."""
    keys = rng.standard_normal((n, 128)) * np.exp2(rng.integers(-10, 6, size=(n, 1)))
    if n > 1:
        keys[1] = 0.0
    if n > 2:
        keys[2] = np.tile(TIE_BLOCK, 4)
    return keys.astype(np.float32)


def random_q(rng, shape):
    """e4m3 codes (never NaN) and their values."""
    codes = ref.encode_e4m3(rng.standard_normal(shape) * 8.0)
    return codes, ref.E4M3_VALUES[codes]


def as_e4m3(codes, family):
    return to_family(codes.view(E4M3), family)


def assert_logits_close(got, want, magnitude):
    got = np.asarray(got, dtype=np.float64)
    finite = np.isfinite(want)
    assert np.all(np.isneginf(got[~finite])), "a key the row does not see has a finite logit"
    assert np.all(np.isfinite(got[finite])), "a visible logit is not finite"
    err = np.abs(got[finite] - want[finite])
    assert np.all(err <= LOGIT_RTOL * magnitude[finite] + 1e-30), float(err.max(initial=0))


def paged_problem(rng, fmt, page_size, batch, next_n, heads, lengths, poison=True):
    """A cache whose pages sit at shuffled positions; unused slots hold NaN keys."""
    blocks_per_req = [max(1, -(-int(n) // page_size)) for n in lengths]
    num_blocks = sum(blocks_per_req) + 1
    perm = rng.permutation(num_blocks)
    table = np.zeros((batch, max(blocks_per_req) + 1), np.int32)
    keys = np.full((num_blocks * page_size, 128), np.nan if poison else 0.0, np.float32)
    start = 0
    for b, (n, nb) in enumerate(zip(lengths, blocks_per_req)):
        table[b, :nb] = perm[start: start + nb]
        start += nb
        slots = ref.physical_slots(table, b, np.arange(int(n)), page_size)
        keys[slots] = random_keys(rng, int(n))
    table[:, -1] = perm[-1]  # a spare page no length reaches
    pages = ref.build_cache(keys, page_size, fmt, pad_bytes=12)
    q_codes, q_values = random_q(rng, (batch, next_n, heads, 128))
    weights = rng.standard_normal((batch * next_n, heads)).astype(np.float32)
    return pages, table, q_codes, q_values, weights


def cache_view(pages, page_size, fmt, family):
    """The [num_blocks, page_size, 1, bytes] view of padded pages (zero-copy)."""
    bpt = ref.BYTES_PER_TOKEN[fmt]
    arr = to_family(pages, family)
    if family == "torch":
        return arr[:, : page_size * bpt].unflatten(1, (page_size, 1, bpt))
    return np.lib.stride_tricks.as_strided(arr, (arr.shape[0], page_size, 1, bpt),
                                           (arr.shape[1], bpt, bpt, 1))


# ---- cache bytes


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_keys_bytes(family, rng, fmt):
    keys = random_keys(rng, 7)
    keys[3, 40] = np.nan
    codes, scales = openmla.indexer_quantize_keys(to_family(keys, family), fmt)
    want_codes, want_scales = (ref.quantize_fp8 if fmt == "fp8" else ref.quantize_fp4)(keys)
    assert np.array_equal(to_numpy(codes).view(np.uint8), want_codes)
    assert np.array_equal(np.ascontiguousarray(to_numpy(scales)).view(np.uint8),
                          np.ascontiguousarray(want_scales).view(np.uint8))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("page_size", [1, 61, 64])
def test_write_keys_bytes_and_dequantize(family, rng, fmt, page_size):
    blocks = 3
    n = blocks * page_size
    keys = random_keys(rng, n)
    slots = rng.permutation(n).astype(np.int64)
    slots[0] = -1  # padding token: skipped, its slot keeps the zeros of the empty cache
    cache = openmla.empty_indexer_cache(blocks, page_size, fmt, pad_bytes=20,
                                        like=to_family(keys, family))
    openmla.indexer_write_keys(to_family(keys, family), to_family(slots, family), cache)
    by_slot = np.zeros((n, 128), np.float32)
    by_slot[slots[1:]] = keys[1:]
    want = ref.build_cache(by_slot, page_size, fmt)
    got = np.asarray(to_numpy(cache)).reshape(blocks, -1)
    skipped = int(np.setdiff1d(np.arange(n), slots[1:])[0])
    mask = np.ones_like(want, bool)  # the skipped slot's bytes are zero, not quantised zeros
    code_bytes = 128 if fmt == "fp8" else 64
    b, t = divmod(skipped, page_size)
    mask[b, t * code_bytes:(t + 1) * code_bytes] = False
    mask[b, page_size * code_bytes + 4 * t: page_size * code_bytes + 4 * t + 4] = False
    assert got.shape == want.shape
    assert np.array_equal(got[mask], want[mask])
    assert not got[~mask].any()
    values, scales = ref.decode_cache(want, page_size, fmt)
    deq = to_numpy(openmla.indexer_dequantize_cache(cache)).reshape(n, 128)
    expect = values * scales[:, None]
    keep = np.arange(n) != skipped
    assert np.array_equal(deq[keep], expect[keep])


def test_vllm_indexer_k_quant_and_cache_takes_the_3d_cache(family, rng):
    blocks, page_size = 2, 64
    keys = random_keys(rng, 5)
    slots = np.array([3, -1, 70, 127, 0], np.int64)
    pages = to_family(np.zeros((blocks, page_size, 132), np.uint8), family)
    openmla.indexer_k_quant_and_cache(to_family(keys, family), pages, to_family(slots, family),
                                      128, "ue8m0")
    by_slot = np.zeros((blocks * page_size, 128), np.float32)
    by_slot[slots[slots >= 0]] = keys[slots >= 0]
    want = ref.build_cache(by_slot, page_size, "fp8")
    got = np.asarray(to_numpy(pages)).reshape(blocks, -1)
    written = np.zeros(blocks * page_size, bool)
    written[slots[slots >= 0]] = True
    for s in np.flatnonzero(written):
        b, t = divmod(int(s), page_size)
        codes, scale = slice(128 * t, 128 * t + 128), slice(8192 + 4 * t, 8196 + 4 * t)
        assert np.array_equal(got[b, codes], want[b, codes])
        assert np.array_equal(got[b, scale], want[b, scale])
    with pytest.raises(NotImplementedError):
        openmla.indexer_k_quant_and_cache(to_family(keys, family), pages,
                                          to_family(slots, family), 64, "ue8m0")


def test_out_of_range_slot_is_a_value_error(family, rng):
    cache = openmla.empty_indexer_cache(1, 4, "fp8", like=to_family(np.zeros(1), family))
    with pytest.raises(ValueError, match="slot_mapping"):
        openmla.indexer_write_keys(to_family(random_keys(rng, 1), family),
                                   to_family(np.array([4], np.int64), family), cache)


# ---- logits


@pytest.mark.parametrize("heads", [1, 32, 64])
def test_fp8_mqa_logits(family, rng, heads):
    m, n = 9, 150
    keys = random_keys(rng, n)
    k_codes, k_scales = ref.quantize_fp8(keys)
    q_codes, q_values = random_q(rng, (m, heads, 128))
    weights = rng.standard_normal((m, heads)).astype(np.float32)
    ks = rng.integers(0, n, size=m).astype(np.int32)
    ke = np.minimum(ks + rng.integers(0, n, size=m), n).astype(np.int32)
    ke[0] = ks[0]  # an empty row
    logits = openmla.fp8_mqa_logits(as_e4m3(q_codes, family),
                                    (as_e4m3(k_codes, family), to_family(k_scales, family)),
                                    to_family(weights, family), to_family(ks, family),
                                    to_family(ke, family), clean_logits=True)
    want, magnitude = ref.mqa_logits_ref(q_values, weights.astype(np.float64),
                                         ref.E4M3_VALUES[k_codes], k_scales.astype(np.float64),
                                         ks, ke)
    assert tuple(logits.shape) == (m, n)
    assert_logits_close(to_numpy(logits), want, magnitude)


PAGED_CASES = [  # (fmt, page_size, next_n, two_dim_lens, heads)
    ("fp8", 64, 1, False, 64), ("fp8", 1, 2, False, 32), ("fp8", 61, 2, True, 1),
    ("fp4", 64, 2, False, 64), ("fp4", 61, 1, True, 32), ("fp4", 1, 1, False, 1),
]


@pytest.mark.parametrize("fmt,page_size,next_n,two_dim,heads", PAGED_CASES)
def test_fp8_paged_mqa_logits(family, rng, fmt, page_size, next_n, two_dim, heads):
    batch = 3
    lengths = [0, int(rng.integers(1, 200)), 130]
    pages, table, q_codes, q_values, weights = paged_problem(
        rng, fmt, page_size, batch, next_n, heads, lengths)
    ctx = np.array(lengths, np.int32)
    if two_dim:  # each row its own length, up to the request's
        ctx = np.maximum(ctx[:, None] - rng.integers(0, 3, size=(batch, next_n)), 0)
        ctx = ctx.astype(np.int32)
    max_len = 256
    meta = openmla.get_paged_mqa_logits_metadata(to_family(ctx, family), page_size, 132)
    logits = openmla.fp8_paged_mqa_logits(
        as_e4m3(q_codes, family), cache_view(pages, page_size, fmt, family),
        to_family(weights, family), to_family(ctx, family), to_family(table, family), meta,
        max_len, False)
    want, magnitude = ref.paged_logits_ref(q_values, weights.astype(np.float64), pages,
                                           page_size, fmt, ctx, table, max_len)
    assert tuple(logits.shape) == (batch * next_n, max_len)
    assert_logits_close(to_numpy(logits), want, magnitude)


# ---- top-k


def test_indexer_topk_ties_order_and_block_table(family, rng):
    rows, n, k, page_size, next_n = 6, 90, 16, 8, 2
    logits = rng.integers(0, 6, size=(rows, n)).astype(np.float32)  # many ties
    starts = rng.integers(0, 20, size=rows).astype(np.int32)
    ends = np.minimum(starts + rng.integers(0, 70, size=rows), n).astype(np.int32)
    ends[1] = starts[1]  # nothing visible
    ends[2] = starts[2] + 5  # fewer than k visible
    indices, lengths = openmla.indexer_topk(to_family(logits, family), k,
                                            to_family(starts, family), to_family(ends, family))
    for r in range(rows):
        want, count = ref.topk_ref(logits[r], starts[r], ends[r], k)
        assert np.array_equal(to_numpy(indices)[r], want), r
        assert int(to_numpy(lengths)[r]) == count
    table = rng.permutation(40)[: (rows // next_n) * 12].reshape(rows // next_n, 12)
    table = table.astype(np.int32)
    zero = np.zeros(rows, np.int32)
    slots, _ = openmla.indexer_topk(to_family(logits, family), k, to_family(zero, family),
                                    to_family(ends, family), to_family(table, family),
                                    page_size, next_n)
    for r in range(rows):
        pos, count = ref.topk_ref(logits[r], 0, ends[r], k)
        want = np.full(k, -1)
        want[:count] = ref.physical_slots(table, r // next_n, pos[:count], page_size)
        assert np.array_equal(to_numpy(slots)[r], want), r


def assert_topk_valid(indices, count, want_logits, slots_of_visible, k, magnitude):
    """Selected physical slots are distinct visible ones, count = min(k, visible), and no
    unselected visible key beats a selected one by more than the logits tolerance."""
    visible = len(slots_of_visible)
    assert count == min(k, visible)
    assert np.all(indices[count:] == -1)
    chosen = indices[:count]
    position = {int(s): p for p, s in enumerate(slots_of_visible)}
    assert all(int(s) in position for s in chosen), "a selected slot is not visible"
    pos = np.array([position[int(s)] for s in chosen], dtype=np.int64)
    assert np.all(np.diff(pos) > 0), "selected positions are not ascending and distinct"
    others = np.setdiff1d(np.arange(visible), pos)
    if count and len(others):
        tol = 2 * LOGIT_RTOL * magnitude[:visible].max()
        assert want_logits[pos].min() >= want_logits[others].max() - tol


@pytest.mark.parametrize("fmt,page_size,next_n,two_dim,heads", PAGED_CASES)
def test_paged_indexer_topk_fused(family, rng, fmt, page_size, next_n, two_dim, heads):
    batch, k = 3, 48
    lengths = [0, int(rng.integers(1, 40)), 200]
    pages, table, q_codes, q_values, weights = paged_problem(
        rng, fmt, page_size, batch, next_n, heads, lengths)
    ctx = np.array(lengths, np.int32)
    if two_dim:
        ctx = np.maximum(ctx[:, None] - rng.integers(0, 3, size=(batch, next_n)), 0)
        ctx = ctx.astype(np.int32)
    indices, topk_length = openmla.paged_indexer_topk(
        as_e4m3(q_codes, family), cache_view(pages, page_size, fmt, family),
        to_family(weights, family), to_family(ctx, family), to_family(table, family), k)
    assert tuple(indices.shape) == (batch, next_n, k)
    want, magnitude = ref.paged_logits_ref(q_values, weights.astype(np.float64), pages,
                                           page_size, fmt, ctx, table, 256)
    lens = ref.visible_lengths(ctx, next_n)
    for b in range(batch):
        for j in range(next_n):
            n = int(lens[b, j])
            slots = ref.physical_slots(table, b, np.arange(n), page_size)
            assert_topk_valid(to_numpy(indices)[b, j], int(to_numpy(topk_length)[b, j]),
                              want[b * next_n + j], slots, k, magnitude[b * next_n + j])


def test_errors_name_the_argument(rng):
    cache = openmla.empty_indexer_cache(1, 4, "fp8")
    with pytest.raises(ValueError, match="format"):
        openmla.indexer_write_keys(random_keys(rng, 1), np.zeros(1, np.int64), cache, "fp5")
    with pytest.raises(ValueError, match="bytes_per_token"):
        openmla.indexer_write_keys(random_keys(rng, 1), np.zeros(1, np.int64), cache, "fp4")
    with pytest.raises(ValueError, match="kv_cache"):
        openmla.indexer_dequantize_cache(np.zeros((1, 4, 1, 100), np.uint8))
    with pytest.raises(NotImplementedError):
        openmla.fp8_paged_mqa_logits((np.zeros((1, 1, 1, 64), np.uint8), np.zeros(1)), cache,
                                     None, None, None, None, 4)
    assert openmla.IndexerKeyFormat.FP4 is not None
