"""Outputs as one transaction, under faults: a failing second output, a full disk (a real 64 KiB tmpfs where
we may mount one, an injected ENOSPC everywhere), concurrent writers; and the file modes the umask gives."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.engine import outputs
from clipsam.engine.errors import OutputPathError
from clipsam.engine.outputs import atomic_output, new_file_mode, output_transaction
from tests.cli_helpers import run_cli
from tests.reliability_helpers import assert_folder_holds, assert_single_line, file_mode, small_png

PICTURE = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)  # ~77 KB as PNG
RECORD = {"segments": [{"class_name": "sky", "score": 0.5}]}


def test_second_output_failing_removes_the_first(tmp_path, monkeypatch):
    def disk_full(record, stream):
        stream.write("{")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs, "dump_json", disk_full)
    with pytest.raises(OutputPathError, match="no space left on device writing '.*r.json'"):
        outputs.write_results(tmp_path / "o.png", PICTURE, tmp_path / "r.json", RECORD)
    assert_folder_holds(tmp_path, set())


def test_a_failure_after_renaming_takes_back_every_output(tmp_path):
    (tmp_path / "blocked").mkdir()  # a folder where the second output's rename must go: replace fails
    with pytest.raises(OutputPathError, match="cannot write"):
        with output_transaction() as transaction:
            with transaction.open(tmp_path / "first.json", "w") as stream:
                stream.write("{}")
            with transaction.open(tmp_path / "blocked", "w") as stream:
                stream.write("{}")
    assert_folder_holds(tmp_path, {"blocked"})
    assert list((tmp_path / "blocked").iterdir()) == []


def test_any_exception_removes_every_temp(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with output_transaction() as transaction:
            with transaction.open(tmp_path / "a.png") as stream:
                stream.write(b"x" * 1000)
            raise KeyboardInterrupt
    assert_folder_holds(tmp_path, set())


def test_both_outputs_appear_together(tmp_path):
    outputs.write_results(tmp_path / "o.png", PICTURE, tmp_path / "r.json", RECORD)
    assert_folder_holds(tmp_path, {"o.png", "r.json"})
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), PICTURE)
    assert json.loads((tmp_path / "r.json").read_text()) == RECORD


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A real 64 KiB tmpfs (needs root, as in CI here); torn down even when the test fails."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; test_second_output_failing_removes_the_first covers ENOSPC")
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_full_disk_leaves_nothing(small_disk):
    with pytest.raises(OutputPathError, match="no space left on device writing '.*o.png'"):
        outputs.write_results(small_disk / "o.png", PICTURE, small_disk / "r.json", RECORD)
    assert_folder_holds(small_disk, set())
    # The same folder takes a small result: the failure left no space taken.
    outputs.write_results(small_disk / "o.png", PICTURE[:8, :8], small_disk / "r.json", RECORD)
    assert_folder_holds(small_disk, {"o.png", "r.json"})


def test_full_disk_through_the_cli_is_one_line(small_disk, tmp_path, capsys, tiny_clip_checkpoint):
    image = small_png(tmp_path / "in.png", 400, 400)
    args = ["dense", "--image", image, "-V", "sky", "-V", "car", "-V", "road"]
    args += ["--clip-checkpoint", tiny_clip_checkpoint, "--short-side", "0", "--out", small_disk / "map.npz"]
    code, _, err = run_cli(args, capsys)
    assert_single_line(code, err, 2, "clipsam: error: ", f"no space left on device writing '{small_disk}")
    assert_folder_holds(small_disk, set())


def test_concurrent_writers_leave_one_complete_version_per_file(tmp_path):
    pictures = [np.full((32, 32, 3), value, np.uint8) for value in range(0, 240, 30)]

    def write(index: int) -> None:
        outputs.write_results(tmp_path / "o.png", pictures[index], tmp_path / "r.json", {"writer": index})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(pictures))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_folder_holds(tmp_path, {"o.png", "r.json"})
    written = np.asarray(Image.open(tmp_path / "o.png"))
    assert any(np.array_equal(written, picture) for picture in pictures)
    assert json.loads((tmp_path / "r.json").read_text())["writer"] in range(len(pictures))


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask, expected):
    previous = os.umask(umask)
    try:
        assert new_file_mode() == expected
        outputs.write_results(tmp_path / "o.png", PICTURE[:4, :4], tmp_path / "r.json", RECORD)
        with atomic_output(tmp_path / "m.npz") as stream:
            np.savez(stream, a=np.zeros(2))
        with open(tmp_path / "plain", "w"):
            pass  # what a normally created file gets
    finally:
        os.umask(previous)
    for name in ("o.png", "r.json", "m.npz", "plain"):
        assert file_mode(tmp_path / name) == expected, name


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600)])
def test_artifact_graphs_and_text_files_get_the_umask_mode(tmp_path, umask, expected):
    import torch

    from clipsam.engine.text.bank import TextBank
    from clipsam.export.onnx_utils import export_onnx

    previous = os.umask(umask)
    try:
        export_onnx(
            torch.nn.Linear(3, 2),
            (torch.zeros(1, 3),),
            tmp_path / "g.onnx",
            input_names=["x"],
            output_names=["y"],
        )
        TextBank(tmp_path / "bank").get("w", ["sky"], lambda q: np.ones((len(q), 4), np.float32))
    finally:
        os.umask(previous)
    assert file_mode(tmp_path / "g.onnx") == expected
    (row,) = (tmp_path / "bank" / "text").iterdir()
    assert file_mode(row) == expected


def test_export_out_onto_a_file_or_a_read_only_folder(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    code, _, err = run_cli(["export", "--out", target, "--random-weights"], capsys)
    assert_single_line(code, err, 2, "clipsam: error: ", "exists and is not a folder")
    assert target.read_text() == "keep me"
    read_only = tmp_path / "ro"
    read_only.mkdir()
    if os.geteuid() == 0:  # root writes through mode bits: a read-only mount is the real thing
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(read_only)], check=True)
    else:
        read_only.chmod(0o555)
    try:
        code, _, err = run_cli(["export", "--out", read_only / "art", "--random-weights"], capsys)
        reason = "read-only file system" if os.geteuid() == 0 else "permission denied"
        assert_single_line(code, err, 2, "clipsam: error: ", reason)
        code, _, err = run_cli(["export", "--out", read_only, "--random-weights"], capsys)
        assert_single_line(code, err, 2, "clipsam: error: ", f"cannot write into --out folder '{read_only}'")
        assert list(read_only.iterdir()) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(read_only)], check=True)
