#!/usr/bin/env python3
"""ClinicFlow's entry point for a fresh checkout. Needs only Python 3.11-3.13 and git.

    python3 dev.py demo     set up, then run the whole pipeline on demo data through Airflow
    python3 dev.py test     set up, then run ruff and the full test suite
    python3 dev.py setup    only set up: .venv from the committed lock file, ClinicFlow installed
    python3 dev.py bench    set up, then run every benchmark (`bench score`: one; see benchmarks/README.md)

Set-up creates ``.venv`` with the Python that runs this script and installs the exact versions in
``requirements/py3XX.txt`` (resolved on Linux x86_64), then ClinicFlow itself in editable mode.
It is skipped when nothing changed since the last install. Extra arguments go to the command
(``python3 dev.py test -k settings``, ``python3 dev.py demo --as-of 2026-11-25``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".clinicflow-installed"
SUPPORTED = ((3, 11), (3, 12), (3, 13))


def fail(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr)
    sys.exit(2)


def lock_file() -> Path:
    version = sys.version_info[:2]
    if version not in SUPPORTED:
        fail(
            f"Python {version[0]}.{version[1]} is not supported; use 3.11, 3.12 or 3.13 "
            "(e.g. `python3.12 dev.py …`)."
        )
    path = ROOT / "requirements" / f"py{version[0]}{version[1]}.txt"
    if not path.exists():
        fail(f"lock file {path} is missing: is the checkout complete?")
    return path


def run(*command: str | Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run([str(c) for c in command], cwd=ROOT, env=env)
    if result.returncode != 0:
        fail(f"`{' '.join(str(c) for c in command)}` failed with exit code {result.returncode}")


def setup() -> None:
    lock = lock_file()
    python = BIN / "python"
    wanted = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if python.exists():
        have = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True).stdout.strip()
        if have != wanted:
            print(f"==> .venv has Python {have or '?'}, this is {wanted}: recreating it", flush=True)
            venv.EnvBuilder(clear=True, with_pip=True).create(VENV)
    else:
        print(f"==> creating .venv with Python {wanted}", flush=True)
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except (subprocess.CalledProcessError, OSError) as exc:
            fail(f"cannot create a virtual environment ({exc}); on Debian/Ubuntu install python3-venv")
    digest = hashlib.sha256(lock.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        return
    print(f"==> installing the locked dependencies from {lock.relative_to(ROOT)} (a few minutes the first time)",
          flush=True)
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    run(*pip, "install", "--quiet", "--requirement", lock)
    run(*pip, "install", "--quiet", "--no-deps", "--editable", ".")
    run(*pip, "check")
    STAMP.write_text(digest + "\n")
    print("==> environment ready", flush=True)


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return
    command, rest = argv[0], argv[1:]
    if command not in ("setup", "demo", "test", "bench"):
        fail(f"unknown command {command!r}; use demo, test, setup or bench")
    setup()
    if command == "setup":
        return
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if command == "demo":
        os.execve(str(BIN / "clinicflow"), ["clinicflow", "demo", *rest], env)
    if command == "bench":
        os.execve(str(BIN / "clinicflow"), ["clinicflow", "bench", *(rest or ["all"])], env)
    print("==> ruff check", flush=True)
    run(BIN / "ruff", "check", ".", env=env)
    print("==> pytest", flush=True)
    os.execve(str(BIN / "python"), ["python", "-m", "pytest", *rest], env)


if __name__ == "__main__":
    main(sys.argv[1:])
