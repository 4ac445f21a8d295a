"""The benchmark runner: predict every image of a dataset, accumulate one confusion matrix, report metrics.

The per-image loop is the batch runner's (engine/batch/runner.py, `run_items`): `EvalWork` reads an image
and its label (`start`) and predicts and counts it (`finish`), one line per image; `EvalTally` adds each
line's confusion counts into the run's matrix. The same lines come back from Ray Data actors for
`clipsam eval --address` (serve/batch_data.py), so a sharded run sums the same counts in another order.

Files in the output folder:
- `eval_in_progress.npz` while a run is unfinished: the confusion matrix, timing sums and the ids of the
  images counted so far, rewritten atomically after every image. `--resume` continues from it (the images
  not counted yet); it is deleted once the final files exist. It is never named like a result.
- `results.json` and `summary.txt`, written atomically only when every image is done (a fresh run deletes
  stale ones first, so they always describe a complete run).
- `visualizations/<id>.png` (image | ground truth | prediction, with a legend) when asked.
Metrics do not depend on where a run was interrupted: the matrix is a sum over images.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clipsam.engine.errors import ClipsamError
from clipsam.engine.eval.datasets import BenchmarkDataset, Sample
from clipsam.engine.eval.metrics import IGNORE_INDEX, SegMetrics, confusion_matrix, metrics_from_confusion
from clipsam.engine.image_io import atomic_output
from clipsam.engine.manifest import package_versions
from clipsam.engine.outputs import write_json, write_picture
from clipsam.engine.render import RANDOM_WEIGHTS_LABEL, class_colors

STATE_NAME = "eval_in_progress.npz"
RESULTS_NAME = "results.json"
SUMMARY_NAME = "summary.txt"
VIS_DIR = "visualizations"
VERSIONED_PACKAGES = ("clipsam", "numpy", "torch", "open_clip_torch", "sam2", "onnxruntime", "numba")

# image uint8 [H, W, 3] → (class ids int [H, W] in the label space, ms per stage)
Predictor = Callable[[np.ndarray], tuple[np.ndarray, dict[str, float]]]
# (images done, images in the run, running mIoU in percent)
Progress = Callable[[int, int, float], None]
# (the samples still to count, the record to give each one's line to): runs them, locally or on a cluster
Runner = Callable[[list[Sample], Callable[[dict], None]], None]


@dataclass(frozen=True)
class EvalResult:
    """A finished run: metrics, mean ms per image per stage, and where the files are."""

    metrics: SegMetrics
    num_images: int
    timings_ms: dict[str, float]
    record: dict
    output_dir: Path


def evaluate(
    dataset: BenchmarkDataset,
    predict: Predictor,
    output_dir: Path | str,
    *,
    class_names: tuple[str, ...],
    config: dict,
    num_samples: int | None = None,
    resume: bool = False,
    save_vis: bool = False,
    random_weights: bool = False,
    setup_ms: dict[str, float] | None = None,
    progress: Progress | None = None,
    in_flight: int = 1,
    runner: Runner | None = None,
) -> EvalResult:
    """Run `predict` over the first num_samples (all when None) images and write the result files.

    config: JSON-able settings of the run, stored in results.json; a resumed run must have the same.
    setup_ms: one-off costs (e.g. text features), reported beside the per-image timings.
    in_flight: images held at once (the next image read while this one is predicted), as `--images`.
    runner: runs the samples elsewhere instead (Ray Data: serve/batch_data.py, `eval_on_ray`), giving each
    one's EvalWork line to the record it is passed; `predict` is then unused.
    """
    num_classes = dataset.spec.num_classes
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    samples = dataset.samples[:num_samples] if num_samples else dataset.samples
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = json.dumps(
        {"config": config, "samples": [s.sample_id for s in samples]}, sort_keys=True, default=str
    )
    state = _start_state(output_dir, fingerprint, num_classes, resume)
    tally = EvalTally(state, output_dir / STATE_NAME, len(samples), progress)
    todo = [sample for sample in samples if sample.sample_id not in state.done]
    if runner is None:
        from clipsam.engine.batch.runner import run_items

        vis = (output_dir / VIS_DIR) if save_vis else None
        work = EvalWork(dataset, predict, class_names, vis_dir=vis, random_weights=random_weights)
        run_items(todo, work, tally.record, in_flight=in_flight)
    else:
        runner(todo, tally.record)
    return _finish(output_dir, state, dataset, samples, class_names, config, random_weights, setup_ms or {})


@dataclass(frozen=True)
class _Loaded:
    sample: Sample
    image: np.ndarray
    label: np.ndarray


class EvalWork:
    """One benchmark image, as the batch runner's Work: `start` reads the image and its label, `finish`
    predicts it and returns its line: {"status": "done", "sample": id, "confusion": [[truth, predicted,
    pixels], …] (the non-zero cells of its confusion matrix), "timings": {stage: ms}}; with vis_dir, its
    visualisation is written there."""

    def __init__(
        self,
        dataset: BenchmarkDataset,
        predict: Predictor,
        class_names: tuple[str, ...],
        *,
        vis_dir: Path | None = None,
        random_weights: bool = False,
    ):
        self.dataset, self.predict, self.class_names = dataset, predict, class_names
        self.vis_dir, self.random_weights = vis_dir, random_weights
        self.colors = class_colors(dataset.spec.num_classes)

    def start(self, sample: Sample) -> _Loaded:
        image, label = self.dataset.load_image(sample), self.dataset.load_label(sample)
        if image.shape[:2] != label.shape:
            raise self.dataset.error(
                f"image '{sample.image_path}' is {image.shape[:2]}, its label {label.shape}"
            )
        return _Loaded(sample, image, label)

    def finish(self, loaded: _Loaded) -> dict:
        pred, timings = self.predict(loaded.image)
        matrix = confusion_matrix(loaded.label, pred, self.dataset.spec.num_classes)
        if self.vis_dir is not None:
            picture = visualization(
                loaded.image, loaded.label, pred, self.class_names, self.colors, self.random_weights
            )
            self.vis_dir.mkdir(parents=True, exist_ok=True)
            write_picture(self.vis_dir / f"{_file_stem(loaded.sample)}.png", picture)
        truth, predicted = np.nonzero(matrix)
        cells = [[int(t), int(p), int(matrix[t, p])] for t, p in zip(truth, predicted, strict=True)]
        timings = {stage: float(value) for stage, value in timings.items()}
        return {"status": "done", "sample": loaded.sample.sample_id, "confusion": cells, "timings": timings}

    def run(self, sample: Sample) -> dict:
        return self.finish(self.start(sample))

    def failed(self, sample: Sample, reason: str) -> dict:
        return {"status": "failed", "sample": sample.sample_id, "error": reason}


class EvalTally:
    """Adds each image's line into the run's state and saves it (atomically) after every image; a failed
    image stops the run with its reason (a score without one of its images would not be the benchmark's)."""

    def __init__(self, state: _State, path: Path, total: int, progress: Progress | None = None):
        self.state, self.path, self.total, self.progress = state, path, total, progress

    def record(self, line: dict) -> None:
        if line["status"] != "done":
            raise ClipsamError(line["error"])
        state = self.state
        if line["sample"] in state.done:  # a line given twice (a retried actor task) is counted once
            return
        for truth, predicted, pixels in line["confusion"]:
            state.matrix[truth, predicted] += pixels
        for stage, value in line["timings"].items():
            state.timing_sums[stage] = state.timing_sums.get(stage, 0.0) + value
        total = float(sum(line["timings"].values()))
        state.timing_sums["total"] = state.timing_sums.get("total", 0.0) + total
        state.done.add(line["sample"])
        state.save(self.path)
        if self.progress is not None:
            self.progress(len(state.done), self.total, metrics_from_confusion(state.matrix).miou)


@dataclass
class _State:
    fingerprint: str
    matrix: np.ndarray  # int64 [C, C], rows = ground truth
    done: set[str] = field(default_factory=set)  # the sample ids counted
    timing_sums: dict[str, float] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        meta = {"fingerprint": self.fingerprint, "done": sorted(self.done), "timing_sums": self.timing_sums}
        np.savez(buffer, matrix=self.matrix, meta=np.array(json.dumps(meta)))
        with atomic_output(path) as stream:
            stream.write(buffer.getvalue())

    @staticmethod
    def load(path: Path) -> _State:
        try:
            with np.load(path) as data:
                meta = json.loads(str(data["meta"]))
                matrix = data["matrix"].astype(np.int64)
            done = meta["done"]
            if isinstance(done, int):  # a state file of a version that counted a prefix of the samples
                done = json.loads(meta["fingerprint"])["samples"][:done]
            return _State(meta["fingerprint"], matrix, set(done), dict(meta["timing_sums"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ClipsamError(
                f"cannot resume: '{path}' is unreadable ({err}); delete it to start over"
            ) from None


def _start_state(output_dir: Path, fingerprint: str, num_classes: int, resume: bool) -> _State:
    state_path = output_dir / STATE_NAME
    if state_path.is_file():
        if not resume:
            raise ClipsamError(
                f"'{output_dir}' holds an unfinished run ({STATE_NAME}): pass --resume to continue it, "
                "or choose another --output-dir"
            )
        state = _State.load(state_path)
        if state.fingerprint != fingerprint or state.matrix.shape != (num_classes, num_classes):
            raise ClipsamError(
                f"cannot resume: the unfinished run in '{output_dir}' used other settings or images; "
                "rerun with the same options, or choose another --output-dir"
            )
        return state
    for stale in (RESULTS_NAME, SUMMARY_NAME):
        (output_dir / stale).unlink(missing_ok=True)
    return _State(fingerprint, np.zeros((num_classes, num_classes), np.int64))


def _finish(output_dir, state, dataset, samples, class_names, config, random_weights, setup_ms) -> EvalResult:
    metrics = metrics_from_confusion(state.matrix)
    count = max(len(state.done), 1)
    timings = {stage: total / count for stage, total in state.timing_sums.items()}
    record = {
        "status": "complete",
        "dataset": dataset.spec.name,
        "dataset_title": dataset.spec.title,
        "data_root": str(dataset.root),
        "num_images": len(samples),
        "random_weights": random_weights,
        "config": config,
        "versions": package_versions(VERSIONED_PACKAGES, missing="absent"),
        "metrics": {"mIoU": _num(metrics.miou), "aAcc": _num(metrics.aacc), "mAcc": _num(metrics.macc)},
        "per_class": [
            {
                "class": name,
                "iou": _num(metrics.iou[c]),
                "acc": _num(metrics.acc[c]),
                "gt_pixels": int(metrics.gt_pixels[c]),
                "pred_pixels": int(metrics.pred_pixels[c]),
            }
            for c, name in enumerate(class_names)
        ],
        "timings_ms_per_image": timings,
        "setup_ms": setup_ms,
        "confusion_matrix": state.matrix.tolist(),
    }
    write_json(output_dir / RESULTS_NAME, record)
    with atomic_output(output_dir / SUMMARY_NAME, "w") as stream:
        stream.write(summary_text(record))
    (output_dir / STATE_NAME).unlink(missing_ok=True)
    return EvalResult(metrics, len(samples), timings, record, output_dir)


def summary_text(record: dict) -> str:
    """The human table of a results.json record."""
    metrics, config = record["metrics"], record["config"]
    lines = [
        f"{record['dataset_title']} — {record['num_images']} images, mode {config.get('mode', '?')}"
        + (", PAMR" if config.get("use_pamr") else ""),
        *(["WARNING: " + RANDOM_WEIGHTS_LABEL] if record["random_weights"] else []),
        f"mIoU {_fmt(metrics['mIoU'])}   aAcc {_fmt(metrics['aAcc'])}   mAcc {_fmt(metrics['mAcc'])}",
        "",
        "Results:",
        f"  mIoU: {_fmt(metrics['mIoU'])}%",
        f"  Pixel Accuracy: {_fmt(metrics['aAcc'])}%",
        f"  Mean Accuracy: {_fmt(metrics['mAcc'])}%",
        f"  Avg Time: {record['timings_ms_per_image'].get('total', 0.0) / 1000:.2f}s per image",
        "",
        f"{'class':<28}{'IoU':>8}{'Acc':>8}",
    ]
    lines += [
        f"{row['class'][:27]:<28}{_fmt(row['iou']):>8}{_fmt(row['acc']):>8}" for row in record["per_class"]
    ]
    lines += [
        "",
        "ms per image: " + ", ".join(f"{k} {v:.1f}" for k, v in record["timings_ms_per_image"].items()),
    ]
    return "\n".join(lines) + "\n"


def visualization(
    image: np.ndarray,
    label: np.ndarray,
    pred: np.ndarray,
    class_names: tuple[str, ...],
    colors: np.ndarray,
    random_weights: bool = False,
) -> np.ndarray:
    """uint8 [H + legend, 3W, 3]: image | ground truth | prediction (ignored pixels black), and below them a
    legend of every class present in either map."""
    height, width = label.shape
    gt_picture = np.zeros((height, width, 3), np.uint8)
    valid = label != IGNORE_INDEX
    gt_picture[valid] = colors[label[valid]]
    panels = np.concatenate([image, gt_picture, colors[pred]], axis=1)
    present = sorted(set(np.unique(label[valid]).tolist()) | set(np.unique(pred).tolist()))
    entries = [(class_names[c], tuple(int(v) for v in colors[c])) for c in present]
    if random_weights:
        entries.insert(0, (RANDOM_WEIGHTS_LABEL, None))
    per_row = max(1, (3 * width) // 160)
    rows = math.ceil(len(entries) / per_row) + 1
    legend = Image.new("RGB", (3 * width, 14 * rows + 4), (0, 0, 0))
    draw = ImageDraw.Draw(legend)
    font = ImageFont.load_default()
    for title, x in (("image", 4), ("ground truth", width + 4), ("prediction", 2 * width + 4)):
        draw.text((x, 2), title, fill=(255, 255, 255), font=font)
    for k, (name, color) in enumerate(entries):
        x, y = 4 + (k % per_row) * 160, 16 + (k // per_row) * 14
        if color is not None:
            draw.rectangle([x, y + 1, x + 10, y + 11], fill=color)
        draw.text((x + 14, y), name[:24], fill=(255, 255, 255) if color else (255, 80, 80), font=font)
    return np.concatenate([panels, np.asarray(legend)], axis=0)


def _file_stem(sample: Sample) -> str:
    return sample.sample_id.replace("/", "__")


def _num(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"
