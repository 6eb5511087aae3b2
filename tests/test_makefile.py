"""The Makefile's set-up: TORCH_INDEX_URL says where torch comes from, and changing it reinstalls torch.

Runs `make setup` on a copy of the Makefile whose .venv holds a fake python that records its arguments
instead of installing anything."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conf import REPO_ROOT

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/../../calls.log"
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The Makefile, its includes and its inputs, with an installed (fake) .venv newer than its inputs."""
    shutil.copy(REPO_ROOT / "Makefile", tmp_path)
    shutil.copytree(REPO_ROOT / "mk", tmp_path / "mk")
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(REPO_ROOT / name, tmp_path)
        os.utime(tmp_path / name, (1_000_000_000, 1_000_000_000))
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    (tmp_path / ".venv" / ".installed").touch()
    return tmp_path


def make_setup(checkout: Path, *variables: str) -> list[str]:
    """The fake python's calls during one `make setup`."""
    log = checkout / "calls.log"
    log.unlink(missing_ok=True)
    subprocess.run(["make", "-s", "setup", *variables], cwd=checkout, check=True, capture_output=True)
    return log.read_text().splitlines() if log.exists() else []


def test_an_installed_venv_installs_nothing_with_the_default(checkout):
    assert make_setup(checkout) == []
    assert make_setup(checkout) == []
    assert (checkout / ".venv" / ".torch-index-url").read_text() == ""


def test_a_new_torch_index_reinstalls_torch_from_it_and_only_once(checkout):
    assert make_setup(checkout, f"TORCH_INDEX_URL={CPU_INDEX}") == [
        "-m pip uninstall -q -y torch",
        f"-m pip install -q -c constraints.txt --index-url {CPU_INDEX} torch==2.13.0",
        "-m pip install -q -c constraints.txt -e .[dev]",
        "-m pip check",
    ]
    assert make_setup(checkout, f"TORCH_INDEX_URL={CPU_INDEX}") == []
    assert make_setup(checkout, f"TORCH_INDEX_URL={CUDA_INDEX}")[:2] == [
        "-m pip uninstall -q -y torch", f"-m pip install -q -c constraints.txt --index-url {CUDA_INDEX} torch==2.13.0"]
    back = make_setup(checkout)  # the default again: plain pip
    assert back[:2] == ["-m pip uninstall -q -y torch", "-m pip install -q -c constraints.txt torch==2.13.0"]
    assert make_setup(checkout) == []


def test_dry_run_prints_the_index(checkout):
    dry = subprocess.run(["make", "-n", "setup", f"TORCH_INDEX_URL={CPU_INDEX}"], cwd=checkout, check=True,
                         capture_output=True, text=True).stdout
    assert f"--index-url {CPU_INDEX} torch==2.13.0" in dry
    assert not (checkout / ".venv" / ".torch-index-url").exists()  # -n changed nothing
