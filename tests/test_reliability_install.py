"""The lock: constraints.txt pins the whole resolved install, install.sh and CI install exactly it, and the
environment the tests run in is that lock (so a fresh install runs the code tested here)."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "constraints.txt"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[a-z0-9-]+", name) and version, f"not an exact pin: {line!r}"
        assert name not in pins, f"{name} pinned twice"
        pins[name] = version
    return pins


def installed_closure(root: str = "clipsam", extras: frozenset[str] = frozenset({"dev"})) -> dict[str, str]:
    """{distribution: installed version} of everything `root[extras]` requires, transitively, with the
    environment markers of this machine."""
    found: dict[str, tuple[str, set[str]]] = {}
    todo = [(root, set(extras))]
    while todo:
        name, wanted = todo.pop()
        dist = metadata.distribution(name)
        key = normalized(dist.metadata["Name"])
        if key in found and wanted <= found[key][1]:
            continue
        found[key] = (dist.version, found.get(key, ("", set()))[1] | wanted)
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in wanted or {""}
            ):
                todo.append((requirement.name, set(requirement.extras)))
    found.pop(normalized(root))
    return {name: version for name, (version, _) in found.items()}


def test_lock_pins_every_installed_dependency_at_its_installed_version():
    pins = read_lock()
    closure = installed_closure()
    assert set(closure) <= set(pins), f"resolved but not locked: {sorted(set(closure) - set(pins))}"
    drifted = {name: (pins[name], version) for name, version in closure.items() if pins[name] != version}
    assert drifted == {}, f"lock vs installed: {drifted}"
    assert "clipsam" not in pins and "pip" not in pins


def test_every_locked_distribution_that_is_installed_matches():
    mismatched = {}
    for name, version in read_lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            mismatched[name] = (version, "not installed")
            continue
        if installed != version:
            mismatched[name] = (version, installed)
    assert mismatched == {}, mismatched


def test_torch_pins_agree_with_install_sh_and_pyproject():
    pins = read_lock()
    assert (pins["torch"], pins["torchvision"], pins["sam2"]) == ("2.14.1", "0.29.1", "1.1.0")
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"torch==2.14.1"' in pyproject and '"torchvision==0.29.1"' in pyproject


def test_pip_check_is_clean():
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


_FAKE_PYTHON = """#!/usr/bin/env bash
# Records every call; stands in for pip and venv, runs real Python for -c.
echo "$*" >> "$CALLS"
if [ "$1" = -c ]; then exec "$REAL_PYTHON" "$@"; fi
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; fi
FREEZE='Torch==2.14.1\\nTyping_Extensions==4.16.0\\npip==23.2\\n'
if [ "$1 $2 $3" = "-m pip freeze" ]; then printf "$FREEZE"; fi
exit 0
"""


def _scratch_repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """install.sh, scripts/lock.sh and the lock copied into a scratch tree, with a recording fake Python."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ("install.sh", "constraints.txt", "scripts/lock.sh"):
        (root / name).write_text((REPO / name).read_text())
    fake = tmp_path / "python"
    fake.write_text(_FAKE_PYTHON)
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "CALLS": str(tmp_path / "calls"), "REAL_PYTHON": sys.executable}
    return root, {**env, "PYTHON": str(fake)}


def _pip_installs(tmp_path: Path) -> list[str]:
    return [
        line for line in (tmp_path / "calls").read_text().splitlines() if line.startswith("-m pip install")
    ]


def test_install_sh_passes_the_lock_to_every_pip_call(tmp_path):
    root, env = _scratch_repo(tmp_path)
    subprocess.run(["bash", str(root / "install.sh"), "--dev"], env=env, check=True)
    installs = _pip_installs(tmp_path)
    assert len(installs) == 3 and all(" -c constraints.txt " in line for line in installs), installs
    assert installs[-1].endswith("-e .[dev]")
    assert "bash install.sh --dev" in (REPO / ".ci" / "run").read_text()  # CI installs exactly the lock
    assert "constraints.txt" not in (REPO / ".gitignore").read_text().split()


def test_lock_script_installs_without_the_lock_and_writes_the_freeze(tmp_path):
    root, env = _scratch_repo(tmp_path)
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    subprocess.run(["bash", str(root / "scripts" / "lock.sh")], env=env, check=True, capture_output=True)
    installs = _pip_installs(tmp_path)
    assert len(installs) == 3 and not any(" -c " in line for line in installs), installs
    written = (root / "constraints.txt").read_text().splitlines()
    header = [line for line in LOCK.read_text().splitlines() if line.startswith("#")]
    assert written == [*header, "torch==2.14.1", "typing-extensions==4.16.0"]
