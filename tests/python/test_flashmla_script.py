"""Runs flashmla_api_script.py, a script written against FlashMLA's Python API (it imports
`flash_mla` and FlashMLA's test helper `quant`), unchanged, with `import openmla as flash_mla`
semantics: both names are bound to openmla in a fresh interpreter."""

import os
import subprocess
import sys

import pytest

from conftest import HAVE_TORCH

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flashmla_api_script.py")

BOOTSTRAP = (
    "import runpy, sys; import openmla as flash_mla; import openmla.quant as quant; "
    "sys.modules['flash_mla'] = flash_mla; sys.modules['quant'] = quant; "
    "runpy.run_path(sys.argv[1], run_name='__main__')"
)


@pytest.mark.skipif(not HAVE_TORCH, reason="the FlashMLA-style script uses PyTorch")
def test_flashmla_api_script_runs_unchanged():
    env = dict(os.environ)
    env.setdefault("OPENMLA_NUM_THREADS", "2")
    result = subprocess.run([sys.executable, "-c", BOOTSTRAP, SCRIPT], capture_output=True,
                            text=True, timeout=600, env=env, cwd=os.path.dirname(SCRIPT))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout
