"""Independent float64 NumPy reference of the lightning indexer, written from the formulas (it
never calls openmla): the FP8 (132 B) and FP4 e2m1 (68 B) page-major key caches, the prefill and
paged decode logits, and the top-k (ties to the lower position, output ascending, optionally
mapped to physical slots through a block table)."""

import numpy as np


def _e4m3_value(code):
    sign = -1.0 if code & 0x80 else 1.0
    exponent, mantissa = (code >> 3) & 0xF, code & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return np.nan
    if exponent == 0:
        return sign * mantissa * 2.0 ** -9
    return sign * (1 + mantissa / 8) * 2.0 ** (exponent - 7)


E4M3_VALUES = np.array([_e4m3_value(c) for c in range(256)])
E2M1_VALUES = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6])


def _nearest_code(x, magnitudes):
    """Code (index into ascending `magnitudes`) nearest |x|, ties to the even code, saturating."""
    a = np.abs(x)
    hi = np.clip(np.searchsorted(magnitudes, a), 1, len(magnitudes) - 1)
    lo = hi - 1
    d_lo, d_hi = a - magnitudes[lo], magnitudes[hi] - a
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    return np.where(a >= magnitudes[-1], len(magnitudes) - 1, np.where(pick_hi, hi, lo))


def encode_e4m3(x):
    """float64 -> e4m3fn codes (RNE; never past 448 here: the scale bounds |x|); NaN -> 0x7F."""
    code = _nearest_code(x, E4M3_VALUES[:127]).astype(np.uint8)
    code = code | np.where(np.signbit(x), 0x80, 0).astype(np.uint8)
    return np.where(np.isnan(x), 0x7F, code).astype(np.uint8)


def encode_e2m1(x):
    """float64 -> e2m1 codes (RNE, saturating at 6, sign bit kept for -0); NaN -> 0x7."""
    code = _nearest_code(x, E2M1_VALUES[:8]).astype(np.uint8)
    code = code | np.where(np.signbit(x), 8, 0).astype(np.uint8)
    return np.where(np.isnan(x), 7, code).astype(np.uint8)


def _pow2_exponent(amax, floor, max_code):
    """k with 2^k = 2^ceil(log2(max(amax, floor) / max_code)); NaN stays NaN."""
    with np.errstate(invalid="ignore"):
        return np.ceil(np.log2(np.maximum(amax, floor) / max_code))


def quantize_fp8(keys):
    """keys [N, 128] -> (codes [N, 128] uint8, scales [N] float32)."""
    x = np.asarray(keys, dtype=np.float64)
    amax = np.abs(x).max(axis=1)
    k = _pow2_exponent(amax, float(np.float32(1e-4)), 448.0)
    scale = np.exp2(k)
    return encode_e4m3(x / scale[:, None]), scale.astype(np.float32)


def quantize_fp4(keys):
    """keys [N, 128] -> (codes [N, 64] uint8, element 2i low nibble; scales [N, 4] uint8)."""
    x = np.asarray(keys, dtype=np.float64).reshape(-1, 4, 32)
    amax = np.abs(x).max(axis=2)
    k = _pow2_exponent(amax, 6.0 * 2.0 ** -126, 6.0)
    nan = np.isnan(k)
    scale = np.where(nan, np.nan, np.exp2(np.where(nan, 0, k)))
    codes = encode_e2m1(x / scale[:, :, None]).reshape(-1, 128)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    return packed, np.where(nan, 255, k + 127).astype(np.uint8)


BYTES_PER_TOKEN = {"fp8": 132, "fp4": 68}


def build_cache(keys_per_slot, page_size, fmt, pad_bytes=0):
    """A page-major cache [num_blocks, page_bytes + pad] uint8 from keys [num_slots, 128]."""
    n = keys_per_slot.shape[0]
    assert n % page_size == 0
    blocks = n // page_size
    codes, scales = (quantize_fp8 if fmt == "fp8" else quantize_fp4)(keys_per_slot)
    code_bytes = codes.reshape(blocks, page_size * codes.shape[1])
    scale_bytes = np.ascontiguousarray(scales).view(np.uint8).reshape(blocks, page_size * 4)
    pad = np.zeros((blocks, pad_bytes), np.uint8)
    return np.concatenate([code_bytes, scale_bytes, pad], axis=1)


def decode_cache(pages, page_size, fmt):
    """(key values [num_slots, 128] float64, key scales [num_slots]) of a page-major cache: FP8
    gives bare e4m3 values and the fp32 scale, FP4 code times block scale and scale 1."""
    blocks = pages.shape[0]
    code_bytes = 128 if fmt == "fp8" else 64
    codes = pages[:, : page_size * code_bytes].reshape(blocks * page_size, code_bytes)
    raw = np.ascontiguousarray(pages[:, page_size * code_bytes: page_size * (code_bytes + 4)])
    if fmt == "fp8":
        return E4M3_VALUES[codes], raw.view(np.float32).reshape(-1).astype(np.float64)
    nibbles = np.stack([codes & 0xF, codes >> 4], axis=2).reshape(-1, 128)
    scale_codes = raw.reshape(-1, 4).astype(np.float64)
    block_scale = np.where(scale_codes == 255, np.nan, np.exp2(scale_codes - 127))
    return E2M1_VALUES[nibbles] * np.repeat(block_scale, 32, axis=1), np.ones(len(codes))


def logits_rows(q_values, weights, key_values, key_scales):
    """sum_h w[h] * ReLU(q[h] . k[s]) * k_scale[s] for every (row, s): [rows, keys] float64 and
    the same sum of absolute terms (the scale of the rounding error)."""
    dots = np.einsum("mhd,sd->mhs", q_values, key_values)
    terms = weights[:, :, None] * np.maximum(dots, 0) * key_scales[None, None, :]
    return terms.sum(axis=1), np.abs(terms).sum(axis=1)


def mqa_logits_ref(q_values, weights, key_values, key_scales, ks, ke):
    """Prefill logits [M, N]: -inf outside [ks[m], ke[m])."""
    logits, magnitude = logits_rows(q_values, weights, key_values, key_scales)
    pos = np.arange(key_values.shape[0])[None, :]
    visible = (pos >= np.asarray(ks)[:, None]) & (pos < np.asarray(ke)[:, None])
    return np.where(visible, logits, -np.inf), np.where(visible, magnitude, 0)


def visible_lengths(context_lens, next_n):
    """[B, next_n] lengths: context_lens [B] -> ctx - next_n + 1 + j (at least 0), or as given."""
    c = np.asarray(context_lens, dtype=np.int64)
    if c.ndim == 2:
        return c
    return np.maximum(c[:, None] - next_n + 1 + np.arange(next_n)[None, :], 0)


def physical_slots(block_table, b, positions, page_size):
    table = np.asarray(block_table)
    return table[b, positions // page_size].astype(np.int64) * page_size + positions % page_size


def paged_logits_ref(q_values, weights, pages, page_size, fmt, context_lens, block_table, max_len):
    """Decode logits [B * next_n, max_len] and their error scale, keys read through the table."""
    batch, next_n = q_values.shape[:2]
    key_values, key_scales = decode_cache(pages, page_size, fmt)
    lengths = visible_lengths(context_lens, next_n)
    out = np.full((batch * next_n, max_len), -np.inf)
    magnitude = np.zeros((batch * next_n, max_len))
    for b in range(batch):
        for j in range(next_n):
            n = int(lengths[b, j])
            slots = physical_slots(block_table, b, np.arange(n), page_size)
            row, mag = logits_rows(q_values[b, j][None], weights[b * next_n + j][None],
                                   key_values[slots], key_scales[slots])
            out[b * next_n + j, :n] = row[0]
            magnitude[b * next_n + j, :n] = mag[0]
    return out, magnitude


def topk_ref(row, start, end, k):
    """Positions (relative to start) of the k largest of row[start:end], ties to the lower
    position, ascending; padded with -1 to k. Returns (indices [k], length)."""
    values = np.asarray(row[start:end], dtype=np.float64)
    order = np.lexsort((np.arange(len(values)), -values))[: min(k, len(values))]
    chosen = np.sort(order)
    out = np.full(k, -1, np.int64)
    out[: len(chosen)] = chosen
    return out, len(chosen)
