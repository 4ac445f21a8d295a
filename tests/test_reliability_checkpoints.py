"""Damaged, foreign and hostile checkpoint files: each refused in one line, whatever torch raises or warns."""

from __future__ import annotations

import io
import pickle
import random
import warnings
import zipfile

import numpy as np
import pytest
import torch

from clipsam.engine.errors import CheckpointError
from clipsam.export.checkpoints import load_checkpoint
from clipsam.export.clip_model import read_clip_checkpoint
from tests.cli_helpers import run_cli
from tests.reliability_helpers import (
    assert_folder_holds,
    assert_single_line,
    run_python,
    small_png,
    stderr_lines,
)


def _saved(obj, **kwargs) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def damaged_checkpoints(seed: int = 0) -> dict[str, bytes]:
    """Truncations and byte flips of a zip checkpoint, a legacy one and a TorchScript archive, plus foreign
    files: the shapes a failed download or a wrong file takes."""
    rng = random.Random(seed)
    good = _saved({"model": {"w": torch.randn(32, 32), "b": torch.zeros(3)}})
    legacy = _saved({"w": torch.randn(4)}, _use_new_zipfile_serialization=False)
    script = io.BytesIO()
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), script)
    files = {}
    for name, data in (("zip", good), ("legacy", legacy), ("torchscript", script.getvalue())):
        for cut in (8, 100, len(data) // 2, len(data) - 1):
            files[f"{name}_cut{cut}"] = data[:cut]
        for index in range(12):
            flipped = bytearray(data)
            for _ in range(rng.randint(1, 16)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            files[f"{name}_flip{index}"] = bytes(flipped)
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("notes.txt", "a zip, not a checkpoint")
    files["plain_zip"] = plain.getvalue()
    directory = good.rindex(b"PK\x01\x02")  # the last central directory record's signature
    files["zip_central_directory_damaged"] = good[:directory] + b"XX" + good[directory + 2 :]
    files["numpy_pickle"] = pickle.dumps({"model": np.zeros(3)}, protocol=4)
    files["text"] = b"hello world\n"
    files["json"] = b'{"model": {}}'
    return files


def test_every_damaged_checkpoint_is_a_checkpoint_error_or_a_state_dict(tmp_path):
    outcomes = {"refused": 0, "loaded": 0}
    for name, data in damaged_checkpoints().items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        for load in (lambda p: load_checkpoint(p, "SAM2"), read_clip_checkpoint):
            try:
                loaded = load(path)
            except CheckpointError as err:
                assert "\n" not in str(err) and str(path) in str(err)
                outcomes["refused"] += 1
            else:
                state = loaded[0] if isinstance(loaded, tuple) else loaded
                assert all(isinstance(value, torch.Tensor) for value in state.values())
                outcomes["loaded"] += 1  # a flip inside tensor data: a valid file with other numbers
    assert outcomes["refused"] > 60, outcomes


@pytest.mark.parametrize("kind", ["zip_cut100", "zip_central_directory_damaged", "plain_zip", "numpy_pickle"])
def test_damaged_clip_checkpoint_through_the_cli(tmp_path, capsys, kind):
    checkpoint = tmp_path / "clip.pt"
    checkpoint.write_bytes(damaged_checkpoints()[kind])
    image = small_png(tmp_path / "in.png")
    args = [
        "dense",
        "--image",
        image,
        "-V",
        "sky",
        "--clip-checkpoint",
        checkpoint,
        "--out",
        tmp_path / "d.npz",
    ]
    code, _, err = run_cli(args, capsys)
    line = assert_single_line(code, err, 2, "clipsam: error: CLIP checkpoint ", "corrupt")
    assert str(checkpoint) in line
    assert_folder_holds(tmp_path, {"clip.pt", "in.png"})


@pytest.mark.parametrize("kind", ["zip_cut100", "torchscript_cut100", "text"])
def test_damaged_sam2_checkpoint_through_the_cli(tmp_path, capsys, tiny_clip_checkpoint, kind):
    checkpoint = tmp_path / "sam2.pt"
    checkpoint.write_bytes(damaged_checkpoints()[kind])
    image = small_png(tmp_path / "in.png")
    args = ["segment", "--image", image, "-V", "sky", "--clip-checkpoint", tiny_clip_checkpoint]
    args += ["--checkpoint", checkpoint, "--output", tmp_path / "o.png"]
    code, _, err = run_cli(args, capsys)
    assert_single_line(code, err, 2, "clipsam: error: SAM2 checkpoint ", "corrupt")
    assert_folder_holds(tmp_path, {"sam2.pt", "in.png"})


def test_a_directory_or_an_empty_file_as_checkpoint(tmp_path, capsys):
    image = small_png(tmp_path / "in.png")
    (tmp_path / "folder.pt").mkdir()
    (tmp_path / "empty.pt").write_bytes(b"")
    for checkpoint, fragment in ((tmp_path / "folder.pt", "not a file"), (tmp_path / "empty.pt", "empty")):
        args = [
            "dense",
            "--image",
            image,
            "-V",
            "a",
            "--clip-checkpoint",
            checkpoint,
            "--out",
            tmp_path / "d.npz",
        ]
        code, _, err = run_cli(args, capsys)
        assert_single_line(code, err, 2, "clipsam: error: ", fragment)


def test_refused_checkpoint_hides_torch_warnings_in_a_real_process(tmp_path):
    """torch warns about the pickle protocol before refusing the file: the user sees one line, no warning."""
    checkpoint = tmp_path / "clip.pt"
    checkpoint.write_bytes(damaged_checkpoints()["numpy_pickle"])
    image = small_png(tmp_path / "in.png")
    args = [
        "dense",
        "--image",
        image,
        "-V",
        "sky",
        "--clip-checkpoint",
        checkpoint,
        "--out",
        tmp_path / "d.npz",
    ]
    done = run_python("import sys; from clipsam.cli.app import main; main(sys.argv[1:])", *args)
    assert_single_line(done.returncode, done.stderr, 2, "clipsam: error: CLIP checkpoint ", "corrupt")
    with warnings.catch_warnings(record=True) as caught, pytest.raises(CheckpointError):
        warnings.simplefilter("always")
        read_clip_checkpoint(checkpoint)
    assert any("pickle protocol" in str(warning.message) for warning in caught)  # the warning is real


_COUNTING_RUN = """
import sys
from pathlib import Path
from clipsam.cli import guard
shown = guard._print_noise
def counting(noise, verbose):
    Path(sys.argv[1]).write_text(str(len(noise.warned)))
    shown(noise, verbose)
guard._print_noise = counting
from clipsam.cli.app import main
main(sys.argv[2:])
"""


def test_successful_torch_run_prints_no_library_warning(tmp_path, tiny_clip_checkpoint):
    """A real torch segment run (tiny CLIP, random SAM2.1 tiny): torchvision warns on every run; stderr keeps
    only clipsam's own lines."""
    counted = tmp_path / "hidden_warnings"
    image = small_png(tmp_path / "in.png", 64, 80)
    args = ["segment", "--image", image, "-V", "sky", "-V", "car", "--clip-checkpoint", tiny_clip_checkpoint]
    args += [
        "--backend",
        "torch",
        "--random-weights",
        "--min-confidence",
        "0",
        "--max-prompts",
        "2",
        "--output",
        tmp_path / "o.png",
    ]
    done = run_python(_COUNTING_RUN, counted, *args)
    assert done.returncode == 0, done.stderr
    assert int(counted.read_text()) >= 1  # something was warned, and hidden
    foreign = [line for line in stderr_lines(done.stderr) if not line.startswith(("clipsam:", "warning:"))]
    assert foreign == [] and "Warning" not in done.stderr, done.stderr
