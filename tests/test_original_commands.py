"""Every command of the original project's README, verbatim with `clipsam segment` in place of
`python clip_guided_segmentation.py` and `clipsam eval` in place of `python run_benchmarks.py`.

The workspace mirrors the original's: `examples/*.jpg`, `checkpoints/` (the golden tiny CLIP as the SCLIP file
and a seeded random SAM2.1 tiny as the SAM2 file, so the commands need no model flag), and
`data/benchmarks/{pascal-voc,coco-stuff}` in the original layout (two small images each). Only the inpainting
commands add `--random-weights`: no Stable Diffusion weights exist here, so the seeded tiny random diffusion
model stands in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.engine.eval.datasets import coco_stuff_train_ids
from tests.cli_helpers import assert_one_line_error, run_cli

BASKETBALL = ["--image", "examples/basketball.jpg"]
BASKETBALL += ["--vocabulary", "Stephen Curry", "LeBron James", "floor", "crowd", "background"]
CAR = ["--image", "examples/car.jpg", "--vocabulary", "sky", "car", "road", "sea", "mountain", "background"]
TIPS = ["--image", "image.jpg", "--vocabulary", "player", "court", "background", "--prompt", "player"]
# (the original's arguments, the picture it writes): README order; tips with "<your classes>" filled in.
SEGMENT_COMMANDS = {
    "basic": ([*BASKETBALL, "--output", "basketball_all_classes.png"], "basketball_all_classes.png"),
    "one-class": (
        [*BASKETBALL, "--prompt", "Stephen Curry", "--output", "stephen_curry_only.png"],
        "stephen_curry_only.png",
    ),
    "remove": (
        [*BASKETBALL, "--prompt", "Stephen Curry", "--edit", "remove", "--use-inpainting"]
        + ["--output", "output_basketball.png", "--random-weights"],
        "output_basketball.png",
    ),
    "sky-replace": (
        [*CAR, "--prompt", "sky", "--edit", "replace", "--use-inpainting"]
        + [
            "--edit-prompt",
            "realistic sunset with a reddish sky",
            "--output",
            "output_car.png",
            "--random-weights",
        ],
        "output_car.png",
    ),
    "style": (
        [*CAR, "--prompt", "car", "--edit", "replace", "--use-inpainting"]
        + [
            "--edit-prompt",
            "cyberpunk neon style car",
            "--output",
            "output_car_cyberpunk.png",
            "--random-weights",
        ],
        "output_car_cyberpunk.png",
    ),
    "best-accuracy": (
        [*TIPS, "--min-confidence", "0.5", "--iou-threshold", "0.8", "-v"],
        "clip_guided_segments.png",
    ),
    "best-speed": (
        [*TIPS, "--min-confidence", "0.3", "--min-region-size", "200"],
        "clip_guided_segments.png",
    ),
    "troubleshooting": (
        [*BASKETBALL, "--min-confidence", "0.3", "--min-region-size", "50", "--iou-threshold", "0.6"],
        "clip_guided_segments.png",
    ),
    "advanced": (
        [*CAR, "--device", "cpu", "--checkpoint", "checkpoints/sam2.1_hiera_tiny.pt"]
        + ["--model-cfg", "sam2.1_hiera_t.yaml", "--output", "advanced.png"],
        "advanced.png",
    ),
}
# Raw label ids per dataset (VOC: 0 background, 15 person, 7 car; COCO-Stuff raw: 0 person, 2 car, 156 sky,
# 11 an id no class uses), 255 ignored.
VOC_IDS, COCO_IDS = (0, 15, 7, 255), (0, 2, 156, 11, 255)


def _picture(height: int, width: int, seed: int) -> np.ndarray:
    from clipsam.engine.bench.demo_scene import demo_scene

    noise = np.random.default_rng(seed).integers(-20, 20, (height, width, 3))
    return np.clip(demo_scene(height, width).astype(int) + noise, 0, 255).astype(np.uint8)


def _label(height: int, width: int, ids: tuple[int, ...]) -> np.ndarray:
    """uint8 [H, W]: vertical bands of the given ids, a 2-pixel border of the last one."""
    label = np.zeros((height, width), np.uint8)
    for k, value in enumerate(ids[:-1]):
        label[:, k * width // (len(ids) - 1) :] = value
    label[:2], label[-2:] = ids[-1], ids[-1]
    return label


def _write_datasets(root: Path) -> None:
    """data/benchmarks/pascal-voc (VOC2012's contents) and data/benchmarks/coco-stuff (raw stuffthingmaps)."""
    voc = root / "data/benchmarks/pascal-voc"
    coco = root / "data/benchmarks/coco-stuff"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    for folder in ("images/val2017", "annotations/val2017"):
        (coco / folder).mkdir(parents=True)
    for k, sample in enumerate(("2007_000033", "2007_000042")):
        Image.fromarray(_picture(48, 64, k)).save(voc / "JPEGImages" / f"{sample}.jpg")
        Image.fromarray(_label(48, 64, VOC_IDS)).save(voc / "SegmentationClass" / f"{sample}.png")
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000033\n2007_000042\n")
    for k, sample in enumerate(("000000000139", "000000000285")):
        Image.fromarray(_picture(40, 56, 10 + k)).save(coco / "images/val2017" / f"{sample}.jpg")
        Image.fromarray(_label(40, 56, COCO_IDS)).save(coco / "annotations/val2017" / f"{sample}.png")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_clip_checkpoint: Path, sam2_tiny):
    """The original project's working folder as cwd, its checkpoints/ as clipsam's checkpoint folder."""
    import torch

    from clipsam.export.registry import DEFAULT_CLIP, get_model

    root = tmp_path_factory.mktemp("original")
    (root / "examples").mkdir()
    (root / "checkpoints").mkdir()
    for name, seed in (("examples/basketball.jpg", 1), ("examples/car.jpg", 2), ("image.jpg", 3)):
        Image.fromarray(_picture(72, 96, seed)).save(root / name, quality=95)
    (root / "checkpoints" / get_model(DEFAULT_CLIP).filename).symlink_to(tiny_clip_checkpoint)
    sam_file = root / "checkpoints" / get_model("sam2.1-hiera-tiny").filename
    torch.save({"model": sam2_tiny.module.state_dict()}, sam_file)
    _write_datasets(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("CLIPSAM_CHECKPOINT_DIR", str(root / "checkpoints"))
        yield root


@pytest.mark.parametrize("name", list(SEGMENT_COMMANDS))
def test_original_segment_command(workspace: Path, capsys, name: str):
    args, picture_name = SEGMENT_COMMANDS[name]
    (workspace / picture_name).unlink(missing_ok=True)
    code, out, err = run_cli(["segment", *args], capsys)
    assert code == 0, err
    assert "Traceback" not in err and "segments" in out
    source = np.asarray(Image.open(workspace / args[args.index("--image") + 1]).convert("RGB"))
    picture = np.asarray(Image.open(workspace / picture_name))
    assert picture.dtype == np.uint8 and picture.shape == source.shape
    if "--use-inpainting" in args and "random tiny diffusion model" not in err:
        np.testing.assert_array_equal(picture, source)  # no segment of the class: nothing to repaint
    if name == "best-accuracy":  # -v: per-stage timings
        assert "sam2_encoder" in out and "sclip" in out


def test_no_prompts_is_a_warning_with_an_empty_written_result(workspace: Path, capsys):
    """The original's troubleshooting case: nothing reaches --min-confidence (1.0 is never reached with
    several classes), so the result is empty but written, and the warning says what to do."""
    args = ["segment", *BASKETBALL, "--min-confidence", "1.0", "--output", "none.png", "--json", "none.json"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "No prompts found! Try lowering --min-confidence" in " ".join(err.split())
    assert json.loads((workspace / "none.json").read_text())["segments"] == []
    assert np.asarray(Image.open(workspace / "none.png")).shape == (72, 96, 3)
    assert out.startswith("0 segments")


def test_named_inpainting_folder_is_the_model_used(workspace: Path, capsys):
    """With --random-weights, --inpaint-model DIR (a random pipeline saved without a text encoder) is the
    model used, not the stand-in; DIR without its UNet weights then fails in one line (DIR is what loads)."""
    from clipsam.engine.edit.inpaint import random_inpaint_pipeline

    low = ["--min-confidence", "0", "--min-region-size", "0", "--max-prompts", "4"]
    code, _, err = run_cli(["segment", *CAR, *low, "--output", "seg.png", "--json", "seg.json"], capsys)
    assert code == 0, err
    segments = json.loads((workspace / "seg.json").read_text())["segments"]
    assert segments, "no segment at --min-confidence 0"
    base = ["segment", *CAR, *low, "--prompt", segments[0]["class_name"], "--edit", "remove"]
    base += ["--use-inpainting", "--random-weights", "--steps", "3"]
    random_inpaint_pipeline(seed=7).save_pretrained(workspace / "my-inpainter")
    code, _, err = run_cli([*base, "--output", "named.png", "--inpaint-model", "my-inpainter"], capsys)
    assert code == 0, err
    assert "random tiny diffusion model" not in err and "text conditioning is random" in err
    source = np.asarray(Image.open(workspace / "examples/car.jpg").convert("RGB"))
    assert (np.asarray(Image.open(workspace / "named.png")) != source).any()  # the class was repainted
    for weights in (workspace / "my-inpainter" / "unet").glob("*.safetensors"):
        weights.unlink()
    code, _, err = run_cli([*base, "--output", "broken.png", "--inpaint-model", "my-inpainter"], capsys)
    assert_one_line_error(code, err, "not a complete diffusers inpainting pipeline")
    assert not (workspace / "broken.png").exists()


def _check_eval(folder: Path, out: str, dataset: str, labels: list[np.ndarray], vis: bool) -> dict:
    for line in ("mIoU:", "Pixel Accuracy:", "Mean Accuracy:", "Avg Time:"):
        assert line in out
    record = json.loads((folder / "results.json").read_text())
    summary = (folder / "summary.txt").read_text()
    assert record["dataset"] == dataset and record["num_images"] == 2
    assert "Pixel Accuracy:" in summary and "Avg Time:" in summary and "per image" in summary
    counted = sum(int((label != 255).sum()) for label in labels)
    assert int(np.sum(record["confusion_matrix"])) == counted  # every labelled pixel scored once
    for value in record["metrics"].values():
        assert 0.0 <= value <= 100.0
    assert (folder / "visualizations").is_dir() == vis
    if vis:
        assert len(list((folder / "visualizations").glob("*.png"))) == 2
    return record


def test_original_eval_quick_pascal(workspace: Path, capsys):
    args = ["eval", "--dataset", "pascal-voc", "--num-samples", "10"]
    code, out, err = run_cli([*args, "--output-dir", "benchmarks/results/pascal_quick", "--save-vis"], capsys)
    assert code == 0, err
    assert "Dataset: pascal-voc (2 samples)" in out and "Mode: Dense (SCLIP only)" in out
    labels = [_label(48, 64, VOC_IDS)] * 2
    record = _check_eval(workspace / "benchmarks/results/pascal_quick", out, "voc21", labels, vis=True)
    assert record["config"]["mode"] == "dense"


def test_original_eval_hybrid_sam(workspace: Path, capsys):
    args = ["eval", "--dataset", "pascal-voc", "--num-samples", "10", "--use-sam"]
    code, out, err = run_cli(
        [*args, "--output-dir", "benchmarks/results/prompted_sam_test", "--save-vis"], capsys
    )
    assert code == 0, err
    labels = [_label(48, 64, VOC_IDS)] * 2
    record = _check_eval(workspace / "benchmarks/results/prompted_sam_test", out, "voc21", labels, vis=True)
    assert record["config"]["mode"] == "prompted-sam" and "sam2" in record["config"]["models"]


def test_original_eval_full_coco_stuff(workspace: Path, capsys):
    args = ["eval", "--dataset", "coco-stuff", "--output-dir", "benchmarks/results/coco_full"]
    args += ["--slide-inference", "--slide-crop", "224", "--slide-stride", "112"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    labels = [coco_stuff_train_ids(_label(40, 56, COCO_IDS))] * 2
    record = _check_eval(workspace / "benchmarks/results/coco_full", out, "coco-stuff164k", labels, vis=False)
    assert len(record["per_class"]) == 171
    config = record["config"]["dense_config"]
    assert (config["crop"], config["stride"], config["logit_scale"]) == (224, 112, 40.0)
