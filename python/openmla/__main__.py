"""The `openmla` command line from the Python package: `python -m openmla ...` and the `openmla`
console script run the C++ CLI that the wheel ships in openmla/bin/ (info, demo, verify, bench;
`openmla --help`)."""

import os
import sys
from pathlib import Path


def cli_path():
    """The CLI executable inside the installed package."""
    return Path(__file__).resolve().parent / "bin" / "openmla"


def main():
    exe = cli_path()
    if not exe.is_file():
        sys.exit(f"openmla: the CLI is missing from this installation ({exe}); the package was "
                 "built with OPENMLA_BUILD_TOOLS=OFF")
    sys.stdout.flush()
    os.execv(exe, [str(exe)] + sys.argv[1:])


if __name__ == "__main__":
    main()
