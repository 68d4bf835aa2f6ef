"""End to end: DeepSeek V3.2 (sparse MLA + lightning indexer) generating through vllm.LLM on CPU
with openmla's vLLM plugin, checked against the dense DeepSeek V3 architecture on vLLM's own CPU
MLA backend.

Oracle: the prompts and generations stay shorter than index_topk (2048), so the indexer selects
every earlier token and sparse attention over the top-k equals dense attention; the same weights
(tiny_deepseek.py) must give the same greedy tokens and logprobs within bf16 / FP8-cache
tolerance. Each engine runs in its own process (run_llm.py). Skipped without vllm.

Run: scripts/test-vllm.sh (makes the venv), or `python -m pytest tests/vllm` in it.
"""

import json
import os
import subprocess
import sys
from collections import namedtuple

import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tiny_deepseek import write_checkpoints  # noqa: E402

# Two requests in one batch: one prompt spans two 64-token pages (block-table mapping), one
# is short; ids below the tiny vocab (256).
PROMPTS = [[(7 * i + 3) % 251 + 2 for i in range(100)], [3, 17, 42, 99, 5, 8, 200, 13]]
MAX_TOKENS = 8
# Tolerances. The first generated token comes from the prefill pass; decode steps are bounded
# one by one and through their median (a wrong index, page mapping or cache record shifts every
# step). run_llm.py keeps the engine core in-process, so every run schedules the same batches:
# with the default separate engine-core process the batching of the first steps varied between
# runs, and with it a step's logprob by up to ~0.17, in vLLM's own dense backend as well.
TOL = {"bf16": dict(first=0.03, median=0.02, step=0.06),
       "fp8": dict(first=0.06, median=0.04, step=0.1)}
# Where the greedy choices differ, the dense run's top two must be this close (a near tie).
NEAR_TIE = 0.2


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return write_checkpoints(str(tmp_path_factory.mktemp("tiny_deepseek")))


def run_llm(model, llm_kwargs=None, expect_ok=True, timeout=600):
    args = {"model": model, "prompts": PROMPTS, "max_tokens": MAX_TOKENS,
            "llm": llm_kwargs or {}}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "run_llm.py"), json.dumps(args)],
                          capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    if not expect_ok:
        assert proc.returncode != 0, "engine started although the configuration is unsupported"
        return log
    assert proc.returncode == 0, log[-6000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def dense(checkpoints):
    return run_llm(checkpoints[1])


def compare(sparse, dense, tol):
    diffs = []
    for r, (s_tokens, d_tokens) in enumerate(zip(sparse["tokens"], dense["tokens"])):
        for step, (s_tok, d_tok) in enumerate(zip(s_tokens, d_tokens)):
            s_lp, d_lp = sparse["logprobs"][r][step], dense["logprobs"][r][step]
            if s_tok != d_tok:
                gap = d_lp[0][1] - d_lp[1][1]
                assert step > 0 and gap < NEAR_TIE, (
                    f"request {r} step {step}: sparse picked {s_tok}, dense {d_tok} "
                    f"(dense top-2 gap {gap:.3f}); sparse {s_tokens} vs dense {d_tokens}")
                break  # the continuations differ from here on
            diff = abs(s_lp[0][1] - d_lp[0][1])
            bound = tol["first"] if step == 0 else tol["step"]
            assert diff < bound, (f"request {r} step {step} token {s_tok}: logprob "
                                  f"{s_lp[0][1]:.4f} (sparse) vs {d_lp[0][1]:.4f} (dense)")
            if step > 0:
                diffs.append(diff)
    assert len(diffs) >= 4, "too few comparable decode steps"
    median = sorted(diffs)[len(diffs) // 2]
    assert median < tol["median"], f"median decode logprob difference {median:.4f}: {diffs}"


def test_dense_baseline_is_not_degenerate(dense):
    # Guards the oracle: random weights must give peaked, varied predictions.
    assert len(dense["tokens"]) == 2 and all(len(t) == MAX_TOKENS for t in dense["tokens"])
    assert len({tok for t in dense["tokens"] for tok in t}) > 2
    assert max(step[0][1] for r in dense["logprobs"] for step in r) > -4.0


def test_v32_bf16_cache_matches_dense(checkpoints, dense):
    sparse = run_llm(checkpoints[0], {"kv_cache_dtype": "auto"})
    print("V3.2 bf16 cache:", sparse["tokens"], "dense V3:", dense["tokens"])
    compare(sparse, dense, TOL["bf16"])


def test_v32_fp8_ds_mla_cache_matches_dense(checkpoints, dense):
    sparse = run_llm(checkpoints[0], {"kv_cache_dtype": "fp8_ds_mla"})
    print("V3.2 fp8_ds_mla cache:", sparse["tokens"], "dense V3:", dense["tokens"])
    compare(sparse, dense, TOL["fp8"])


def test_unsupported_block_size_fails_at_engine_start(checkpoints):
    log = run_llm(checkpoints[0], {"kv_cache_dtype": "fp8_ds_mla", "block_size": 16},
                  expect_ok=False)
    assert "block size 16 is not supported" in log, log[-4000:]


Selector = namedtuple("Selector", "head_size dtype kv_cache_dtype block_size use_mla use_sparse")


@pytest.mark.parametrize("field, value, message", [
    ("head_size", 512, "head size 512"),
    ("dtype", "float16", "dtype torch.float16"),
    ("kv_cache_dtype", "fp8_e4m3", "kv_cache_dtype 'fp8_e4m3'"),
    ("block_size", 16, "block size 16"),
])
def test_unsupported_configuration_is_named(field, value, message):
    from openmla.vllm_plugin import _check_sparse_config

    good = dict(head_size=576, dtype=torch.bfloat16, kv_cache_dtype="fp8_ds_mla",
                block_size=64, use_mla=True, use_sparse=True)
    _check_sparse_config(Selector(**good), None)
    bad = dict(good, **{field: getattr(torch, value) if field == "dtype" else value})
    with pytest.raises(ValueError, match=message):
        _check_sparse_config(Selector(**bad), None)
