"""The evaluation runner: oracle → mIoU 100, resume equals an uninterrupted run, result files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from clipsam.engine.errors import ClipsamError
from clipsam.engine.eval import datasets
from clipsam.engine.eval.evaluate import RESULTS_NAME, STATE_NAME, SUMMARY_NAME, evaluate
from clipsam.engine.eval.metrics import confusion_matrix, metrics_from_confusion
from tests.test_eval_fixtures import expected_labels, make_benchmark

CONFIG = {"mode": "dense", "use_pamr": False}


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def oracle(dataset):
    """A predictor returning each image's ground truth (ignored pixels → class 0)."""
    truth = {_key(dataset.load_image(s)): dataset.load_label(s) for s in dataset.samples}

    def predict(image):
        label = truth[_key(image)].astype(np.int32)
        label[label == 255] = 0
        return label, {"sclip": 1.0, "postprocess": 0.5}

    return predict


def noisy(dataset, seed=0):
    """A deterministic imperfect predictor: the oracle with a seeded share of pixels shifted by one class."""
    perfect = oracle(dataset)
    classes = dataset.spec.num_classes

    def predict(image):
        label, timings = perfect(image)
        flip = np.random.default_rng(int(_key(image)[:8], 16) + seed).random(label.shape) < 0.4
        return np.where(flip, (label + 1) % classes, label), timings

    return predict


def _dataset(name, tmp_path):
    make_benchmark(name, tmp_path / "data")
    return datasets.open_dataset(name, tmp_path / "data")


@pytest.mark.parametrize("name", ["voc21", "voc20", "ade20k", "cityscapes"])
def test_oracle_scores_100(name, tmp_path):
    dataset = _dataset(name, tmp_path)
    names = datasets.benchmark_vocabulary(name).class_names
    result = evaluate(dataset, oracle(dataset), tmp_path / "out", class_names=names, config=CONFIG)
    assert result.metrics.miou == pytest.approx(100.0)
    assert result.metrics.aacc == pytest.approx(100.0) and result.metrics.macc == pytest.approx(100.0)
    record = json.loads((tmp_path / "out" / RESULTS_NAME).read_text())
    assert record["status"] == "complete" and record["metrics"]["mIoU"] == 100.0
    assert record["num_images"] == len(dataset)
    assert not (tmp_path / "out" / STATE_NAME).exists()


def test_noisy_metrics_equal_the_hand_accumulated_matrix(tmp_path):
    dataset = _dataset("context59", tmp_path)
    predict = noisy(dataset)
    names = datasets.benchmark_vocabulary("context59").class_names
    result = evaluate(dataset, predict, tmp_path / "out", class_names=names, config=CONFIG)
    matrix = sum(
        confusion_matrix(label, predict(dataset.load_image(s))[0], 59)
        for s, label in zip(dataset.samples, expected_labels("context59"), strict=True)
    )
    assert result.metrics.miou == pytest.approx(metrics_from_confusion(matrix).miou)
    assert 0 < result.metrics.miou < 100
    assert result.timings_ms == {"sclip": 1.0, "postprocess": 0.5, "total": 1.5}


class Interrupted(Exception):
    pass


def test_resume_equals_an_uninterrupted_run(tmp_path):
    dataset = _dataset("coco-stuff164k", tmp_path)
    names = datasets.benchmark_vocabulary("coco-stuff164k").class_names
    whole = evaluate(dataset, noisy(dataset), tmp_path / "whole", class_names=names, config=CONFIG)

    def stop_after_one(done, total, miou):
        assert total == 3 and 0.0 <= miou <= 100.0
        if done == 1:
            raise Interrupted

    out = tmp_path / "cut"
    with pytest.raises(Interrupted):
        evaluate(dataset, noisy(dataset), out, class_names=names, config=CONFIG, progress=stop_after_one)
    assert (out / STATE_NAME).is_file()
    assert not (out / RESULTS_NAME).exists() and not (out / SUMMARY_NAME).exists()
    with pytest.raises(ClipsamError, match="unfinished run .* pass --resume"):
        evaluate(dataset, noisy(dataset), out, class_names=names, config=CONFIG)
    with pytest.raises(ClipsamError, match="other settings"):
        evaluate(dataset, noisy(dataset), out, class_names=names, config={"mode": "sam-vote"}, resume=True)
    calls = []

    def counting(image):
        calls.append(1)
        return noisy(dataset)(image)

    resumed = evaluate(dataset, counting, out, class_names=names, config=CONFIG, resume=True)
    assert len(calls) == 2  # only the images after the interruption
    assert resumed.metrics.miou == whole.metrics.miou
    np.testing.assert_array_equal(resumed.metrics.iou, whole.metrics.iou)
    a, b = (json.loads((d / RESULTS_NAME).read_text()) for d in (tmp_path / "whole", out))
    assert a["per_class"] == b["per_class"] and a["confusion_matrix"] == b["confusion_matrix"]
    assert not (out / STATE_NAME).exists()


def test_num_samples_visualizations_and_summary(tmp_path):
    dataset = _dataset("voc21", tmp_path)
    names = datasets.benchmark_vocabulary("voc21").class_names
    out = tmp_path / "out"
    result = evaluate(
        dataset, noisy(dataset), out, class_names=names, config=CONFIG, num_samples=1, save_vis=True,
        random_weights=True,
    )  # fmt: skip
    assert result.num_images == 1
    pictures = sorted((out / "visualizations").glob("*.png"))
    assert [p.name for p in pictures] == ["2007_000033.png"]
    from PIL import Image

    with Image.open(pictures[0]) as picture:
        assert picture.width == 3 * 4 and picture.height > 3
    summary = (out / SUMMARY_NAME).read_text()
    assert "mIoU" in summary and "RANDOM WEIGHTS" in summary and "aeroplane" in summary


def test_overlapped_and_reordered_runs_count_the_same(tmp_path):
    """The per-image loop is the batch runner's: two images in flight, or the lines given back in another
    order (as Ray Data actors finish them), give the same matrix; a run cut after one line resumes with
    the others only."""
    from clipsam.engine.eval.evaluate import EvalWork

    dataset = _dataset("coco-stuff164k", tmp_path)
    names = datasets.benchmark_vocabulary("coco-stuff164k").class_names
    whole = evaluate(dataset, noisy(dataset), tmp_path / "whole", class_names=names, config=CONFIG)
    overlapped = evaluate(
        dataset, noisy(dataset), tmp_path / "overlapped", class_names=names, config=CONFIG, in_flight=2
    )
    work = EvalWork(dataset, noisy(dataset), names)
    seen = []

    def reversed_runner(todo, record):
        seen.append([sample.sample_id for sample in todo])
        for line in [work.run(sample) for sample in todo][::-1]:
            record(line)

    shuffled = evaluate(
        dataset, None, tmp_path / "reversed", class_names=names, config=CONFIG, runner=reversed_runner
    )
    assert seen == [[sample.sample_id for sample in dataset.samples]]

    def last_only_then_stop(todo, record):
        record(work.run(todo[-1]))
        raise Interrupted

    cut = tmp_path / "cut"
    with pytest.raises(Interrupted):
        evaluate(dataset, None, cut, class_names=names, config=CONFIG, runner=last_only_then_stop)
    seen.clear()
    resumed = evaluate(
        dataset, None, cut, class_names=names, config=CONFIG, runner=reversed_runner, resume=True
    )
    assert seen == [[sample.sample_id for sample in dataset.samples[:-1]]]
    records = [
        json.loads((tmp_path / name / RESULTS_NAME).read_text())
        for name in ("whole", "overlapped", "reversed", "cut")
    ]
    for record in records[1:]:
        assert record["confusion_matrix"] == records[0]["confusion_matrix"]
        assert record["per_class"] == records[0]["per_class"]
    for result in (overlapped, shuffled, resumed):
        assert result.metrics.miou == whole.metrics.miou


def test_a_failing_image_stops_the_eval_with_its_reason(tmp_path):
    """A score without one of its images would not be the benchmark's: the run stops with the image's
    one-line reason, the images before it kept for --resume."""
    dataset = _dataset("voc21", tmp_path)
    names = datasets.benchmark_vocabulary("voc21").class_names
    predict = noisy(dataset)
    second = _key(dataset.load_image(dataset.samples[1]))

    def failing(image):
        if _key(image) == second:
            raise ClipsamError("image too large for this test")
        return predict(image)

    out = tmp_path / "out"
    with pytest.raises(ClipsamError, match="^image too large for this test$"):
        evaluate(dataset, failing, out, class_names=names, config=CONFIG)
    assert (out / STATE_NAME).is_file() and not (out / RESULTS_NAME).exists()
    resumed = evaluate(dataset, predict, out, class_names=names, config=CONFIG, resume=True)
    whole = evaluate(dataset, predict, tmp_path / "whole", class_names=names, config=CONFIG)
    np.testing.assert_array_equal(resumed.metrics.iou, whole.metrics.iou)


def test_a_state_file_that_counted_a_prefix_resumes(tmp_path):
    """State files of the version that stored the count of images done (not their ids) still resume."""
    dataset = _dataset("coco-stuff164k", tmp_path)
    names = datasets.benchmark_vocabulary("coco-stuff164k").class_names
    whole = evaluate(dataset, noisy(dataset), tmp_path / "whole", class_names=names, config=CONFIG)
    out = tmp_path / "old"
    with pytest.raises(Interrupted):

        def stop_after_one(done, total, miou):
            raise Interrupted

        evaluate(dataset, noisy(dataset), out, class_names=names, config=CONFIG, progress=stop_after_one)
    with np.load(out / STATE_NAME) as data:
        meta, matrix = json.loads(str(data["meta"])), data["matrix"]
    assert len(meta["done"]) == 1
    meta["done"] = 1
    np.savez(out / STATE_NAME, matrix=matrix, meta=np.array(json.dumps(meta)))
    resumed = evaluate(dataset, noisy(dataset), out, class_names=names, config=CONFIG, resume=True)
    np.testing.assert_array_equal(resumed.metrics.iou, whole.metrics.iou)
