"""Package surface: names of FlashMLA's API, the README example, binding conversions, and a
self-check that the reference comparisons in this suite can fail."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import mla_ref
import openmla
from mla_ref import BF16, to_family

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_flashmla_names_and_metadata():
    for name in ("get_mla_metadata", "flash_mla_with_kvcache", "flash_mla_sparse_fwd",
                 "FlashMLASchedMeta", "FP8KVCacheLayout", "quantize_k_cache",
                 "dequantize_k_cache", "abs_indices2indices_in_kvcache",
                 "abs_indices_to_cache_indices"):
        assert hasattr(openmla, name), name
    assert openmla.FP8KVCacheLayout.V32_FP8Sparse.value == 1
    assert openmla.FP8KVCacheLayout.MODEL1_FP8Sparse.value == 2
    assert openmla.FP8KVCacheLayout.V32_FP8Sparse.get_meta() == (576, 512, 64, 128, 4)
    meta, splits = openmla.get_mla_metadata(np.zeros(3, np.int32), 64, 1, 64, True, 2048,
                                            unused_keyword=1)
    assert isinstance(meta, openmla.FlashMLASchedMeta) and splits is None
    assert not meta.have_initialized and meta.config is None
    assert isinstance(openmla.__version__, str) and openmla.__version__
    kernels = openmla.list_kernels()
    assert {k[1] for k in kernels} >= {"sparse_decode", "dense_decode", "sparse_prefill"}
    assert isinstance(openmla.cpu_features(), str)


def readme_example():
    for path in (os.path.join(ROOT, "README.md"),):
        if not os.path.exists(path):
            continue
        for block in re.findall(r"```python\n(.*?)```", open(path).read(), re.S):
            if "import openmla" in block and "flash_mla_with_kvcache" in block:
                return block
    return None


def test_readme_example_runs():
    code = readme_example()
    if code is None:
        pytest.skip("no README example found (source tree not available)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_binding_dtype_views_and_errors(family):
    # An array whose element type openmla has no name for is a TypeError from the binding.
    with pytest.raises(TypeError, match="q"):
        openmla.flash_mla_sparse_fwd(to_family(np.zeros((1, 4, 576)), family),
                                     to_family(np.zeros((4, 1, 576), BF16), family),
                                     to_family(np.zeros((1, 1, 64), np.int32), family), 0.5)
    # A non-array object.
    with pytest.raises(TypeError, match="kv"):
        openmla.flash_mla_sparse_fwd(to_family(np.zeros((1, 4, 576), BF16), family), [[1.0]],
                                     to_family(np.zeros((1, 1, 64), np.int32), family), 0.5)
    # A (array, dtype name) pair of the wrong element size.
    with pytest.raises(TypeError, match="bytes"):
        openmla._openmla.quantize_kv_cache((np.zeros((1, 2, 1, 576), np.float32), "bfloat16"),
                                           openmla.KvFormat.V32,
                                           np.zeros((1, 2, 1, 656), np.uint8))


def test_float8_and_uint8_caches_give_the_same_result(rng):
    torch = mla_ref.torch_or_none()
    x = mla_ref.randn_bf16(rng, (2, 8, 1, 576), 0.1)
    c8 = openmla.quantize_k_cache(x, 1)
    q = mla_ref.randn_bf16(rng, (1, 1, 4, 576), 1.0)
    idx = np.arange(16, dtype=np.int32).reshape(1, 1, 16)
    run = lambda cache: openmla.flash_mla_with_kvcache(
        q, cache, None, None, 512, openmla.get_mla_metadata()[0], is_fp8_kvcache=True, indices=idx)
    base = run(c8)
    as_e4m3 = c8.view(mla_ref.E4M3)  # ml_dtypes float8_e4m3fn view of the same bytes
    other = run(as_e4m3)
    assert np.array_equal(base[0].view(np.uint16), other[0].view(np.uint16))
    if torch is not None:
        t = openmla.quantize_k_cache(to_family(x, "torch"), 1)
        assert t.dtype == torch.float8_e4m3fn
        tq = to_family(q, "torch")
        ti = to_family(idx, "torch")
        for cache in (t, t.view(torch.uint8), t.view(torch.int8)):
            o, _ = openmla.flash_mla_with_kvcache(tq, cache, None, None, 512,
                                                  openmla.get_mla_metadata()[0],
                                                  is_fp8_kvcache=True, indices=ti)
            assert np.array_equal(mla_ref.to_numpy(o).view(np.uint16), base[0].view(np.uint16))


def test_torch_inputs_with_grad_and_results_are_torch(rng):
    torch = mla_ref.torch_or_none()
    if torch is None:
        pytest.skip("PyTorch is not installed")
    q = to_family(mla_ref.randn_bf16(rng, (2, 4, 512), 0.1), "torch").requires_grad_(True)
    kv = to_family(mla_ref.randn_bf16(rng, (16, 1, 512), 0.1), "torch")
    idx = torch.arange(64, dtype=torch.int32).remainder(16).view(1, 1, 64).repeat(2, 1, 1)
    out, mx, lse = openmla.flash_mla_sparse_fwd(q, kv, idx, 0.5)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
    assert mx.dtype == torch.float32 and lse.shape == (2, 4)


def test_reference_checks_are_not_vacuous(rng):
    """The comparator rejects a result computed with a slightly wrong scale and a wrong lonely
    row, so passing tests mean something."""
    q = mla_ref.randn_bf16(rng, (3, 8, 512), 0.5)
    kv = mla_ref.randn_bf16(rng, (64, 1, 512), 0.5)
    idx = mla_ref.randperm_rows(rng, 3, 64, 64, [-1]).reshape(3, 1, 64).astype(np.int32)
    out, mx, lse = openmla.flash_mla_sparse_fwd(q, kv, idx, 0.5)
    f = lambda s: mla_ref.sparse_prefill_ref(q.astype(np.float64), kv.astype(np.float64), idx, s)
    good = f(0.5)
    mla_ref.check_close("out", mla_ref.f64(out), good[0], mla_ref.TOL_PREFILL_OUT)
    bad = f(0.5 * 1.01)
    with pytest.raises(AssertionError):
        mla_ref.check_close("out", mla_ref.f64(out), bad[0], mla_ref.TOL_PREFILL_OUT)
    with pytest.raises(AssertionError):
        mla_ref.check_close("lse", mla_ref.f64(lse), bad[2], mla_ref.TOL_PREFILL_STAT)
    lonely = good[2].copy()
    lonely[0, 0] = np.inf
    with pytest.raises(AssertionError, match="inf"):
        mla_ref.check_close("lse", mla_ref.f64(lse), lonely, mla_ref.TOL_PREFILL_STAT)


def test_testing_helpers_smoke(family):
    from openmla import testing

    x = to_family(mla_ref.randn_bf16(np.random.default_rng(1), (3, 4, 8), 1.0), family)
    y = testing.non_contiguousify(x)
    assert tuple(y.shape) == (3, 4, 8)
    testing.check_is_allclose("same", y, x, *testing.TOLERANCES[("sparse_decode", "out")])
    with pytest.raises(AssertionError):
        testing.check_is_allclose("different", mla_ref.f64(x) * 1.5, x)


def test_empty_batch_is_accepted_or_rejected_cleanly():
    q = np.zeros((0, 4, 576), BF16)
    try:
        out, mx, lse = openmla.flash_mla_sparse_fwd(q, np.zeros((8, 1, 576), BF16),
                                                    np.zeros((0, 1, 64), np.int32), 0.5)
    except ValueError:
        return
    assert out.shape == (0, 4, 512) and lse.shape == (0, 4)
