"""`make`'s install of torch's CPU build (the `cpu` extra's pin, which PyPI does not carry), into a fresh venv
with pip configured as a user's machine has it: no configuration file, PyPI and PyTorch's CPU wheel index
(the Makefile's TORCH_INDEX) and nothing else. Where that index answers, pip takes torch from it; where it
does not, the user reads one line saying what is needed. A machine that keeps the wheel on disk (a
find-links folder, as CI's does) installs without reaching the index. pip runs with --dry-run: it resolves
and picks the wheel, and installs nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from paths import ROOT

TORCH = next(r for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cpu"]
             if r.startswith("torch=="))  # fmt: skip
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"  # the Makefile's default


def users_env(**extra: str) -> dict[str, str]:
    """This machine's environment less pip's settings (the certificates it trusts stay), no pip configuration
    file: pip as it comes, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "MAKE")) or k == "PIP_CERT"}
    return env | {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"} | extra


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    return path


def make_torch(venv: Path, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    pip = f"{venv}/bin/python -m pip install --dry-run --no-deps"
    t0 = time.monotonic()
    run = subprocess.run(["make", "-s", "-C", str(ROOT), "torch", f"VENV={venv}", f"TORCH_PIP={pip}", *args],
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    return run, time.monotonic() - t0


def local_wheel() -> Path | None:
    """A find-links folder of this machine's pip that holds the pinned torch wheel (CI's has one)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    folders = [os.environ.get("PIP_FIND_LINKS", "")]
    folders += [line.split("=", 1)[1].strip("'") for line in out.splitlines() if "find-links=" in line]
    name = TORCH.removeprefix("torch==")
    for folder in (f for entry in folders for f in entry.split() if f):
        if any(Path(folder).glob(f"torch-{name}-*.whl")):
            return Path(folder)
    return None


def test_a_users_machine_gets_torch_from_its_index_or_one_line_saying_what_is_needed(venv):
    run, seconds = make_torch(venv, users_env())
    host = urlsplit(TORCH_INDEX).hostname
    try:
        socket.getaddrinfo(host, 443)
    except OSError:  # this machine and CI: only the package registries resolve
        assert run.returncode != 0
        assert run.stderr.splitlines()[0] == (
            f"{TORCH}, PyTorch's CPU build (not on PyPI), was found neither in PyTorch's CPU wheel index "
            f"({TORCH_INDEX}) nor where pip looks: let pip reach that index, or put the wheel in a folder and "
            f"export PIP_FIND_LINKS=FOLDER (pip's output: {venv}/pip-torch.log)"
        ), run.stderr
        assert "No matching distribution found for " + TORCH in (venv / "pip-torch.log").read_text()
    else:
        assert run.returncode == 0, run.stderr
        assert f"Would install torch-{TORCH.removeprefix('torch==')}" in (venv / "pip-torch.log").read_text()
    assert seconds < 60  # an unreachable index costs pip's retries for torch alone (~8 s here)


def test_a_wheel_on_disk_installs_without_reaching_the_index(venv):
    folder = local_wheel()
    if folder is None:
        pytest.skip(f"this machine's pip has no find-links folder holding {TORCH}")
    with socket.socket() as s:  # a port nothing listens on: the index, were it asked, would refuse at once
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/whl/cpu"
    run, seconds = make_torch(venv, users_env(PIP_FIND_LINKS=str(folder)), f"TORCH_INDEX={closed}")
    assert run.returncode == 0, run.stderr
    log = (venv / "pip-torch.log").read_text()
    assert f"Would install torch-{TORCH.removeprefix('torch==')}" in log and closed not in log, log
    assert seconds < 30
