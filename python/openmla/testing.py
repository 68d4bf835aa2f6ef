"""Helpers for tests written in FlashMLA's style: its comparator, its tolerances and its way of
making inputs non-contiguous. Works on PyTorch tensors and NumPy arrays (bfloat16 via
ml_dtypes). openmla's own test suite does not rely on this module."""

import numpy as np

from ._arrays import is_torch

# FlashMLA's (abs_tol, rel_tol, cos_diff_tol) per op and output.
TOLERANCES = {
    ("dense_decode", "out"): (8e-4, 2.01 / 128, 5e-6),
    ("dense_decode", "lse"): (1e-6, 8.01 / 65536, 1e-7),
    ("sparse_decode", "out"): (1e-3, 2.01 / 128, 5e-6),
    ("sparse_decode", "lse"): (1e-6, 8.01 / 65536, 1e-7),
    ("sparse_prefill", "out"): (8e-4, 3.01 / 128, 7e-6),
    ("sparse_prefill", "max_logits"): (1e-6, 2.01 / 65536, 1e-7),
    ("sparse_prefill", "lse"): (1e-6, 2.01 / 65536, 1e-7),
}


def to_float64(x):
    """A float64 NumPy copy of a tensor or array of any supported dtype."""
    if is_torch(x):
        return x.detach().to("cpu").double().numpy()
    return np.asarray(x).astype(np.float64)


def check_is_allclose(name, ans, ref, abs_tol=1e-5, rel_tol=1e-2, cos_diff_tol=1e-7):
    """FlashMLA's comparator: the +inf, -inf and NaN positions must match; then every element
    needs abs error < abs_tol or relative error < rel_tol; then 1 - 2 sum(a r) / sum(a^2 + r^2)
    <= cos_diff_tol. Raises AssertionError naming `name` on failure."""
    a, r = to_float64(ans), to_float64(ref)
    assert a.shape == r.shape, f"{name}: shape {a.shape} != {r.shape}"
    for kind, fn in (("+inf", np.isposinf), ("-inf", np.isneginf), ("NaN", np.isnan)):
        assert np.array_equal(fn(a), fn(r)), f"{name}: {kind} positions differ"
    special = ~np.isfinite(a)
    a, r = np.where(special, 0.0, a), np.where(special, 0.0, r)
    err = np.abs(a - r)
    ok = (err < abs_tol) | (err / (np.abs(r) + 1e-6) < rel_tol)
    assert ok.all(), f"{name}: {int((~ok).sum())} of {ok.size} elements out of tolerance"
    if float(np.sum(r * r)) >= 1e-12:
        cos_diff = 1.0 - 2.0 * float(np.sum(a * r)) / float(np.sum(a * a + r * r))
        assert cos_diff <= cos_diff_tol, f"{name}: cos_diff {cos_diff} > {cos_diff_tol}"


def non_contiguousify(x):
    """A copy of `x` inside a larger buffer (last dim + 128, others + 1), so every stride is
    unusual while the last dimension stays contiguous."""
    shape = tuple(x.shape)
    big = tuple(n + 1 for n in shape[:-1]) + (shape[-1] + 128,)
    index = tuple(slice(0, n) for n in shape)
    if is_torch(x):
        import torch

        view = torch.empty(big, dtype=x.dtype, device=x.device)[index]
        view.copy_(x)
        return view
    view = np.empty(big, dtype=x.dtype)[index]
    view[...] = x
    return view
