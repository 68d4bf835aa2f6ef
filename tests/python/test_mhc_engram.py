"""mHC and Engram through the Python module against an independent float64 NumPy transcription
of the reference formulas:

- mHC: DeepSeek-V4 `inference/model.py` (`hc_pre`, `hc_post`, `hc_head`) and `kernel.py`
  (`hc_split_sinkhorn`), as also written by vLLM's `vllm/model_executor/kernels/mhc/torch.py`
  (`mhc_pre_torch`, `mhc_post_torch`); spec notes v4-blocks.md section 2.2.
- Engram: DeepSeek's Engram demo (`NgramHashMapping._get_ngram_hashes`, the offsets of
  `MultiHeadEmbedding`) and the HF DeepSeek-V4.1 port's `_engram_gate`; v4-blocks.md section 3.

When vLLM is importable its eager mHC functions are compared too (skipped otherwise); its fused
`torch.ops._C.hc_*_fused_cpu` kernels are cross-checked in test_vllm_crosscheck.py.
"""

import importlib.util
import os

import numpy as np
import pytest

import openmla

ml_dtypes = pytest.importorskip("ml_dtypes")


def bf16_round(a):
    return np.asarray(a, dtype=np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def make(a, dtype, family):
    """NumPy array `a` as `dtype` ("bfloat16", "float32", "int64") in the requested family."""
    if dtype == "bfloat16":
        arr = np.asarray(a, dtype=np.float32).astype(ml_dtypes.bfloat16)
    else:
        arr = np.asarray(a, dtype=dtype)
    if family == "numpy":
        return arr
    import torch

    if dtype == "bfloat16":
        return torch.from_numpy(arr.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(arr.copy())


def f64(x):
    if hasattr(x, "detach"):
        return x.detach().float().numpy().astype(np.float64)
    return np.asarray(x).astype(np.float64)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def ref_hc_pre(x, fn, scale, base, iters, rms_eps, hc_eps):
    """x [T, hc, D] float64 (bf16 values). Returns y (bf16-rounded), post, comb."""
    t, hc, d = x.shape
    v = x.reshape(t, hc * d)
    mix = (v @ fn.T) / np.sqrt((v * v).mean(-1, keepdims=True) + rms_eps)
    pre = sigmoid(mix[:, :hc] * scale[0] + base[:hc]) + hc_eps
    post = 2.0 * sigmoid(mix[:, hc:2 * hc] * scale[1] + base[hc:2 * hc])
    logits = (mix[:, 2 * hc:] * scale[2] + base[2 * hc:]).reshape(t, hc, hc)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    comb = e / e.sum(-1, keepdims=True) + hc_eps
    comb = comb / (comb.sum(-2, keepdims=True) + hc_eps)
    for _ in range(iters - 1):
        comb = comb / (comb.sum(-1, keepdims=True) + hc_eps)
        comb = comb / (comb.sum(-2, keepdims=True) + hc_eps)
    y = (pre[:, :, None] * x).sum(1)
    return bf16_round(y), post, comb


def ref_hc_post(f, residual, post, comb):
    out = post[:, :, None] * f[:, None, :] + np.einsum("tjk,tjd->tkd", comb, residual)
    return bf16_round(out)


def ref_hc_head(x, fn, scale, base, rms_eps, hc_eps):
    t, hc, d = x.shape
    v = x.reshape(t, hc * d)
    mix = (v @ fn.T) / np.sqrt((v * v).mean(-1, keepdims=True) + rms_eps)
    pre = sigmoid(mix * scale[0] + base) + hc_eps
    return bf16_round((pre[:, :, None] * x).sum(1))


def assert_bf16_close(got, want):
    np.testing.assert_allclose(f64(got), want, rtol=1 / 128, atol=0.05 / 128)


def mhc_inputs(rng, tokens, hc, hidden, head=False):
    rows = hc if head else (2 + hc) * hc
    x = bf16_round(np.clip(rng.normal(size=(tokens, hc, hidden)), -4, 4))
    fn = rng.normal(size=(rows, hc * hidden)) / np.sqrt(hc * hidden)
    scale = 0.5 + 0.2 * rng.normal(size=1 if head else 3)
    base = 0.5 * rng.normal(size=rows)
    return x, fn.astype(np.float32).astype(np.float64), scale.astype(np.float32).astype(
        np.float64), base.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("tokens,hc,hidden,iters", [(1, 4, 256, 20), (7, 4, 100, 20),
                                                    (3, 2, 64, 3), (20, 4, 48, 20)])
def test_hc_pre_matches_transcription(family, rng, tokens, hc, hidden, iters):
    x, fn, scale, base = mhc_inputs(rng, tokens, hc, hidden)
    y, post, comb = openmla.hc_pre(make(x, "bfloat16", family), make(fn, "float32", family),
                                   make(scale, "float32", family), make(base, "float32", family),
                                   sinkhorn_iters=iters, rms_eps=1e-6, hc_eps=1e-6)
    want_y, want_post, want_comb = ref_hc_pre(x, fn, scale, base, iters, 1e-6, 1e-6)
    assert_bf16_close(y, want_y)
    np.testing.assert_allclose(f64(post), want_post, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f64(comb), want_comb, rtol=1e-4, atol=1e-6)


def test_hc_pre_keeps_leading_dims(rng):
    x, fn, scale, base = mhc_inputs(rng, 6, 4, 32)
    xb = make(x, "bfloat16", "numpy").reshape(2, 3, 4, 32)
    y, post, comb = openmla.hc_pre(xb, make(fn, "float32", "numpy"),
                                   make(scale, "float32", "numpy"), make(base, "float32", "numpy"))
    assert y.shape == (2, 3, 32) and post.shape == (2, 3, 4) and comb.shape == (2, 3, 4, 4)
    want_y, _, _ = ref_hc_pre(x, fn, scale, base, 20, 1e-6, 1e-6)
    assert_bf16_close(y.reshape(6, 32), want_y)


@pytest.mark.parametrize("tokens,hc,hidden", [(1, 4, 256), (5, 4, 37), (9, 2, 64)])
def test_hc_post_matches_transcription(family, rng, tokens, hc, hidden):
    f = bf16_round(rng.normal(size=(tokens, hidden)))
    residual = bf16_round(rng.normal(size=(tokens, hc, hidden)))
    post = (2 * sigmoid(rng.normal(size=(tokens, hc)))).astype(np.float32).astype(np.float64)
    comb = rng.uniform(0, 0.5, size=(tokens, hc, hc)).astype(np.float32).astype(np.float64)
    out = openmla.hc_post(make(f, "bfloat16", family), make(residual, "bfloat16", family),
                          make(post, "float32", family), make(comb, "float32", family))
    assert tuple(out.shape) == (tokens, hc, hidden)
    assert_bf16_close(out, ref_hc_post(f, residual, post, comb))


@pytest.mark.parametrize("tokens,hc,hidden", [(1, 4, 256), (6, 4, 50)])
def test_hc_head_matches_transcription(family, rng, tokens, hc, hidden):
    x, fn, scale, base = mhc_inputs(rng, tokens, hc, hidden, head=True)
    out = openmla.hc_head(make(x, "bfloat16", family), make(fn, "float32", family),
                          make(scale, "float32", family), make(base, "float32", family),
                          rms_eps=1e-6, hc_eps=1e-6)
    assert_bf16_close(out, ref_hc_head(x, fn, scale, base, 1e-6, 1e-6))


def test_hc_pre_plan_is_reused_and_checked(rng):
    x, fn, scale, base = mhc_inputs(rng, 3, 4, 32)
    args = [make(x, "bfloat16", "numpy"), make(fn, "float32", "numpy"),
            make(scale, "float32", "numpy"), make(base, "float32", "numpy")]
    plan = openmla.Plan()
    first = openmla.hc_pre(*args, plan=plan)
    assert plan.valid and plan.op == "mhc_pre"
    again = openmla.hc_pre(*args, plan=plan)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(f64(a), f64(b))
    x2, _, _, _ = mhc_inputs(rng, 4, 4, 32)
    with pytest.raises(Exception, match="plan"):
        openmla.hc_pre(make(x2, "bfloat16", "numpy"), *args[1:], plan=plan)


def test_mhc_errors_name_the_argument(rng):
    x, fn, scale, base = mhc_inputs(rng, 2, 4, 16)
    args = [make(x, "bfloat16", "numpy"), make(fn, "float32", "numpy"),
            make(scale, "float32", "numpy"), make(base, "float32", "numpy")]
    with pytest.raises(TypeError, match="hc_fn"):
        openmla.hc_pre(args[0], args[1].astype(np.float16), *args[2:])
    with pytest.raises(ValueError, match="hc_scale"):
        openmla.hc_pre(*args[:2], args[2][:2], args[3])
    with pytest.raises(ValueError, match="sinkhorn_iters"):
        openmla.hc_pre(*args, sinkhorn_iters=0)


# --- Engram ----------------------------------------------------------------------------------


def ref_engram_hash(ids, multipliers, primes, pad_id):
    """The demo's shift / multiply / XOR / floor-mod, plus the per-column offsets (int64 wrap)."""
    b, t = ids.shape
    max_ngram = len(multipliers)
    shifts = [ids] + [np.pad(ids, ((0, 0), (k, 0)), constant_values=pad_id)[:, :t]
                      for k in range(1, max_ngram)]
    cols = []
    with np.errstate(over="ignore"):
        for n in range(2, max_ngram + 1):
            mix = shifts[0] * multipliers[0]
            for k in range(1, n):
                mix = np.bitwise_xor(mix, shifts[k] * multipliers[k])
            cols += [mix % p for p in primes[n - 2]]
    offsets = np.cumsum([0] + [int(p) for p in primes.reshape(-1)[:-1]])
    return np.stack(cols, axis=-1) + offsets


def demo_multipliers(seed, layer_id, max_ngram, vocab):
    rng = np.random.default_rng(seed + 10007 * layer_id)
    half_bound = max(1, (np.iinfo(np.int64).max // vocab) // 2)
    return rng.integers(0, half_bound, size=(max_ngram,), dtype=np.int64) * 2 + 1


def test_engram_hash_matches_demo(family, rng):
    ids = rng.integers(0, 700, size=(2, 33)).astype(np.int64)
    mult = demo_multipliers(0, 1, 4, 700)
    primes = np.array([[67, 71], [73, 79], [83, 89]], dtype=np.int64)
    got = openmla.engram_hash(make(ids, "int64", family), make(mult, "int64", family),
                              make(primes, "int64", family), 2)
    np.testing.assert_array_equal(f64(got).astype(np.int64), ref_engram_hash(ids, mult, primes, 2))
    got32 = openmla.engram_hash(make(ids[0], "int64", family), make(mult, "int64", family),
                                make(primes, "int64", family), 2, dtype="int32")
    assert tuple(got32.shape) == (33, 6)
    np.testing.assert_array_equal(f64(got32), ref_engram_hash(ids[:1], mult, primes, 2)[0])


def test_engram_embed_gathers_rows(family, rng):
    table = bf16_round(rng.normal(size=(50, 8)))
    ids = rng.integers(0, 50, size=(5, 3)).astype(np.int64)
    got = openmla.engram_embed(make(table, "bfloat16", family), make(ids, "int64", family))
    np.testing.assert_array_equal(f64(got), table[ids].reshape(5, 24))
    with pytest.raises(ValueError, match="hash_ids"):
        openmla.engram_embed(make(table, "bfloat16", family), make(ids + 50, "int64", family))


def ref_engram_gate(h, kv, w, eps, clamp):
    t, hc, d = h.shape
    key, value = kv[:, :hc * d].reshape(t, hc, d), kv[:, hc * d:]
    rstd = 1 / np.sqrt((h * h).mean(-1) + eps) / np.sqrt((key * key).mean(-1) + eps)
    dot = (h * w * key).sum(-1) * rstd / np.sqrt(d)
    gate = sigmoid(np.copysign(np.sqrt(np.maximum(np.abs(dot), clamp)), dot))
    return bf16_round(h + gate[:, :, None] * value[:, None, :])


@pytest.mark.parametrize("tokens,hc,hidden", [(1, 4, 256), (7, 4, 45), (3, 2, 64)])
def test_engram_gate_matches_transcription(family, rng, tokens, hc, hidden):
    h = bf16_round(rng.normal(size=(tokens, hc, hidden)))
    kv = bf16_round(rng.normal(size=(tokens, (hc + 1) * hidden)))
    w = (1 + 0.3 * rng.normal(size=(hc, hidden))).astype(np.float32).astype(np.float64)
    want = ref_engram_gate(h, kv, w, 1e-6, 1e-6)
    hh = make(h, "bfloat16", family)
    out = openmla.engram_gate(hh, make(kv, "bfloat16", family), make(w, "float32", family))
    assert_bf16_close(out, want)
    openmla.engram_gate(hh, make(kv, "bfloat16", family), make(w, "float32", family), out=hh)
    assert_bf16_close(hh, want)
    with pytest.raises(ValueError, match="kv"):
        openmla.engram_gate(hh, make(kv[:, :-1], "bfloat16", family), make(w, "float32", family))


# --- vLLM cross-checks (skipped unless vLLM is importable) -----------------------------------


def _vllm_dir():
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vLLM is not installed")
    return list(spec.submodule_search_locations)[0]


def _vllm_mhc_torch():
    pytest.importorskip("torch")
    path = os.path.join(_vllm_dir(), "model_executor", "kernels", "mhc", "torch.py")
    if not os.path.exists(path):
        pytest.skip("this vLLM has no eager mHC reference")
    spec = importlib.util.spec_from_file_location("vllm_mhc_torch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hc_pre_post_match_vllm_eager(rng):
    torch = pytest.importorskip("torch")
    vm = _vllm_mhc_torch()
    x, fn, scale, base = mhc_inputs(rng, 5, 4, 128)
    xt, fnt = make(x, "bfloat16", "torch"), make(fn, "float32", "torch")
    st, bt = make(scale, "float32", "torch"), make(base, "float32", "torch")
    post_v, comb_v, y_v = vm.mhc_pre_torch(xt, fnt, st, bt, 1e-6, 1e-6, 1e-6, 2.0, 20)
    y, post, comb = openmla.hc_pre(xt, fnt, st, bt, sinkhorn_iters=20)
    assert_bf16_close(y, f64(y_v))
    np.testing.assert_allclose(f64(post), f64(post_v).reshape(5, 4), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(f64(comb), f64(comb_v), rtol=1e-4, atol=1e-6)
    f = make(bf16_round(rng.normal(size=(5, 128))), "bfloat16", "torch")
    out_v = vm.mhc_post_torch(f, xt, post_v, comb_v)
    assert_bf16_close(openmla.hc_post(f, xt, post_v, comb_v), f64(out_v))
    assert torch.is_tensor(y)
