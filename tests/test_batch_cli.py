"""`clipsam segment --images`: a folder of small images with one corrupt file, on one warm engine.

Checked with tools nobody here wrote: pycocotools loads annotations.json (and `loadRes` takes its
annotations), its RLEs decode to the per-image JSON's areas; the per-image JSON equals `segment --json` of
the same image apart from timings_ms; the overlapped run (in flight 3) writes what the sequential one writes;
a SIGKILLed run resumed gives the uninterrupted run's annotations.json; Ctrl-C stops after the images in
flight with exit 130 and says how to go on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.engine.bench.demo_scene import demo_scene
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.conftest import rng_image

WORDS = ["sky", "car", "road", "background"]
IMAGES = 12
WAIT_S = 240


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """12 images in two levels (demo scenes and noise, several sizes) and one truncated PNG."""
    root = tmp_path_factory.mktemp("batch") / "images"
    for index in range(IMAGES):
        sub = root / ("street" if index % 2 else "noise") / (f"part{index % 3}" if index > 5 else "")
        sub.mkdir(parents=True, exist_ok=True)
        height, width = (64 + 8 * (index % 3), 96 + 16 * (index % 2))
        pixels = demo_scene(height, width) if index % 2 else rng_image(height, width, seed=index)
        Image.fromarray(pixels).save(sub / f"img{index:02d}.png")
    whole = (root / "street" / "img01.png").read_bytes()
    (root / "corrupt.png").write_bytes(whole[: len(whole) // 2])
    return root


def _args(artifacts: Path, *extra) -> list:
    return ["segment", *extra, "-V", *WORDS, "--min-confidence", "0", "--artifacts", artifacts]


def _without_timings(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != "timings_ms"}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def sequential(folder: Path, artifacts: Path, tmp_path_factory) -> tuple[Path, int]:
    """The folder run sequentially (--in-flight 1): (its --out-dir, its exit code)."""
    from clipsam.cli.app import main

    out = tmp_path_factory.mktemp("seq") / "out"
    args = _args(artifacts, "--images", folder, "--out-dir", out, "--in-flight", "1")
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return out, info.value.code


def test_the_run_writes_every_image_logs_the_corrupt_one_and_exits_1(sequential, folder: Path) -> None:
    out, code = sequential
    assert code == 1  # one image failed (documented)
    done = [line for line in _lines(out / "results.jsonl") if line["status"] == "done"]
    errors = _lines(out / "errors.jsonl")
    assert len(done) == IMAGES and len(errors) == 1
    assert errors[0]["image"] == "corrupt.png" and "corrupt or truncated" in errors[0]["error"]
    assert not (out / "corrupt.json").exists()
    for line in done:
        stem = out / Path(line["image"]).with_suffix("")
        assert stem.with_suffix(".json").is_file() and stem.with_suffix(".png").is_file()
        assert Image.open(stem.with_suffix(".png")).size == Image.open(folder / line["image"]).size


def test_annotations_load_in_pycocotools_and_match_the_per_image_json(sequential, folder: Path) -> None:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    out = sequential[0]
    coco = COCO(str(out / "annotations.json"))
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("img*.png"))
    assert [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)] == names
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == WORDS[-1:] + WORDS[:-1]  # background first
    total = 0
    for image_id, info in coco.imgs.items():
        record = json.loads((out / Path(info["file_name"]).with_suffix(".json")).read_text())
        assert (info["height"], info["width"]) == (record["image"]["height"], record["image"]["width"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(record["segments"])
        for ann, segment in zip(anns, record["segments"], strict=True):
            assert coco.cats[ann["category_id"]]["name"] == segment["class_name"]
            rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
            assert int(mask_utils.area(rle)) == ann["area"] == segment["area"]
            assert np.allclose(mask_utils.toBbox(rle), ann["bbox"])
        total += len(anns)
    assert total > 0 and len(coco.anns) == total
    results = coco.loadRes(list(coco.anns.values()))
    assert len(results.anns) == total


def test_each_image_json_is_what_segment_json_writes(sequential, folder, artifacts, tmp_path, capsys) -> None:
    out = sequential[0]
    image = folder / "street" / "part1" / "img07.png"
    single = tmp_path / "one.json"
    code, _, err = run_cli(
        _args(artifacts, "--image", image, "-o", tmp_path / "o.png", "--json", single), capsys
    )
    assert code == 0, err
    batch = json.loads((out / "street" / "part1" / "img07.json").read_text())
    assert _without_timings(batch) == _without_timings(json.loads(single.read_text()))
    assert (out / "street" / "part1" / "img07.png").read_bytes() == (tmp_path / "o.png").read_bytes()


def test_the_overlapped_run_writes_what_the_sequential_one_writes(
    sequential, folder, artifacts, tmp_path, capsys
):
    out = sequential[0]
    other = tmp_path / "overlap"
    args = _args(artifacts, "--images", folder, "--out-dir", other, "--in-flight", "3")
    code, text, err = run_cli(args, capsys)
    assert code == 1, err
    assert "warning: corrupt.png" in err and f"{IMAGES} done, 1 failed, 0 skipped" in text
    for path in sorted(out.rglob("img*.json")):
        mine = json.loads((other / path.relative_to(out)).read_text())
        assert _without_timings(mine) == _without_timings(json.loads(path.read_text()))
    assert (other / "annotations.json").read_bytes() == (out / "annotations.json").read_bytes()


def _start_and_wait(folder: Path, artifacts: Path, out: Path, lines: int):
    """A `segment --images` subprocess, once results.jsonl has `lines` lines (or it ended, or WAIT_S)."""
    args = [
        sys.executable,
        "-m",
        "clipsam",
        *map(str, _args(artifacts, "--images", folder, "--out-dir", out)),
    ]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT_S
    while (
        len(_lines(out / "results.jsonl")) < lines and process.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    return args, process


def test_resume_after_sigkill_gives_the_uninterrupted_annotations(sequential, folder, artifacts, tmp_path):
    out = tmp_path / "killed"
    args, process = _start_and_wait(folder, artifacts, out, lines=4)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=WAIT_S)
    finished = len(_lines(out / "results.jsonl"))
    assert 4 <= finished < IMAGES + 1, "the run ended before it could be killed midway"
    assert not (out / "annotations.json").exists()
    again = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=WAIT_S)
    assert again.returncode == 1, again.stderr
    assert f"skipped of {IMAGES + 1}" in again.stdout
    assert (out / "annotations.json").read_bytes() == (sequential[0] / "annotations.json").read_bytes()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]


def test_ctrl_c_stops_after_the_images_in_flight_and_says_how_to_resume(folder, artifacts, tmp_path):
    out = tmp_path / "stopped"
    _, process = _start_and_wait(folder, artifacts, out, lines=1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    done = [line["image"] for line in _lines(out / "results.jsonl") if line["status"] == "done"]
    coco = json.loads((out / "annotations.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == sorted(done)
    assert len(done) < IMAGES


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ([], "--images needs --out-dir"),
        (["--out-dir", "OUT", "--json", "x.json"], "--images does not take --json"),
        (["--out-dir", "OUT", "--use-inpainting"], "--images does not take --use-inpainting"),
    ],
)
def test_usage_errors_are_one_line(folder, artifacts, tmp_path, capsys, extra, fragment) -> None:
    extra = [str(tmp_path / "out") if value == "OUT" else value for value in extra]
    code, _, err = run_cli(_args(artifacts, "--images", folder, *extra), capsys)
    assert code == 2
    assert_one_line_error(code, err, fragment)


def test_resume_refuses_a_folder_made_with_other_options(sequential, folder, artifacts, capsys) -> None:
    out = sequential[0]
    args = ["segment", "--images", folder, "--out-dir", out, "--resume", "-V", "sky", "car"]
    code, _, err = run_cli([*args, "--min-confidence", "0", "--artifacts", artifacts], capsys)
    assert_one_line_error(code, err, "made with other settings (class_names)")


def test_out_dir_without_images_is_refused(artifacts, street_image, tmp_path, capsys) -> None:
    code, _, err = run_cli(_args(artifacts, "--image", street_image, "--out-dir", tmp_path), capsys)
    assert_one_line_error(code, err, "go with --images")


def test_no_picture_writes_json_only(folder, artifacts, tmp_path, capsys) -> None:
    out = tmp_path / "json-only"
    listing = tmp_path / "two.txt"
    listing.write_text(f"{folder / 'noise' / 'img00.png'}\n{folder / 'street' / 'img01.png'}\n")
    code, _, err = run_cli(_args(artifacts, "--images", listing, "--out-dir", out, "--no-picture"), capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "annotations.json", "batch.json", "img00.json", "img01.json", "results.jsonl",
    ]  # fmt: skip
    assert os.stat(out / "img00.json").st_size > 0
