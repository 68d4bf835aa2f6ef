#!/usr/bin/env python3
"""Runs the README's Python section as a reader would: a fresh virtual environment, the section's
install commands (its first ```bash block) verbatim from the repository root, then its first
```python block from a directory outside the source tree. The example must exit 0 and print what
the comment on its print line says; the `openmla` CLI must then be on the venv's PATH and work
as `python -m openmla`.

    python3 tests/readme/check_readme_python.py [--isolated]

The venv is recreated at build-python/readme-venv/ on every run. To keep reruns incremental, the
build tools (scikit-build-core, nanobind; not the package's dependencies, which must come from
pyproject.toml) are installed into it first and pip builds without isolation into its own build
directory, build-python/readme/: an isolated build moves the build tools' paths on every run,
and scikit-build-core then discards the whole CMake build. --isolated runs exactly what a user
runs, isolation included (a full build, several minutes).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Python"


def readme_blocks():
    text = (ROOT / "README.md").read_text()
    start = text.index("\n" + SECTION)
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else len(text)]
    bash = re.search(r"```bash\n(.*?)```", section, re.S)
    python = re.search(r"```python\n(.*?)```", section, re.S)
    assert bash and python, f"README {SECTION!r} needs a ```bash and a ```python block"
    return bash.group(1), python.group(1)


def expected_output(example):
    """The comment on the example's last print line: what it prints."""
    for line in reversed(example.splitlines()):
        if line.startswith("print(") and "#" in line:
            return line.split("#", 1)[1].strip()
    return None


def run(cmd, **kw):
    print("+", cmd if isinstance(cmd, str) else " ".join(map(str, cmd)), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--isolated", action="store_true",
                    help="let pip build in an isolated environment (full rebuild)")
    args = ap.parse_args()
    install, example = readme_blocks()
    tmp = Path(tempfile.mkdtemp(prefix="openmla-readme-"))
    venv = ROOT / "build-python" / "readme-venv"
    try:
        if venv.exists():
            shutil.rmtree(venv)
        run([sys.executable, "-m", "venv", str(venv)])
        env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}",
                   VIRTUAL_ENV=str(venv), PIP_DISABLE_PIP_VERSION_CHECK="1")
        env.pop("PYTHONPATH", None)
        if not args.isolated:
            run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                 "scikit-build-core>=0.10", "nanobind>=2.2"], env=env)
            # pip reads a "no-" option from the environment inverted: 0 means --no-build-isolation.
            env.update(PIP_NO_BUILD_ISOLATION="0", SKBUILD_BUILD_DIR=str(ROOT / "build-python" / "readme"))
        # The README's commands, verbatim, in the repository root.
        run(["bash", "-euo", "pipefail", "-c", install], cwd=ROOT, env=env)
        (tmp / "example.py").write_text(example)
        out = subprocess.run([str(venv / "bin" / "python"), "example.py"], cwd=tmp, env=env,
                             capture_output=True, text=True)
        print(out.stdout, end="")
        print(out.stderr, end="", file=sys.stderr)
        if out.returncode != 0:
            print(f"check_readme_python: the README example failed (exit {out.returncode})")
            return 1
        want = expected_output(example)
        got = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        if want is not None and got != want:
            print(f"check_readme_python: the README example printed {got!r}, its comment says "
                  f"{want!r}")
            return 1
        # The CLI from the same install: on PATH and as python -m openmla.
        run(["openmla", "--version"], cwd=tmp, env=env)
        run([str(venv / "bin" / "python"), "-m", "openmla", "info"], cwd=tmp, env=env,
            stdout=subprocess.DEVNULL)
        print("check_readme_python: README install + example + CLI ok")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
