"""Dataset readers: every benchmark layout read end to end from a generated miniature; clear layout errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.engine.errors import ClipsamError
from clipsam.engine.eval import datasets
from tests.test_eval_fixtures import SAMPLE_IDS, expected_labels, make_benchmark, write_label

ALL = list(datasets.SPECS)


def test_the_eight_benchmarks_are_known_with_their_protocol():
    assert set(ALL) == {
        "voc21", "voc20", "context60", "context59", "coco-object", "coco-stuff164k", "cityscapes", "ade20k",
    }  # fmt: skip
    reduce = {name for name, spec in datasets.SPECS.items() if spec.reduce_zero_label}
    assert reduce == {"voc20", "context59", "ade20k"}
    classes = {name: spec.num_classes for name, spec in datasets.SPECS.items()}
    assert classes == {
        "voc21": 21, "voc20": 20, "context60": 60, "context59": 59, "coco-object": 81,
        "coco-stuff164k": 171, "cityscapes": 19, "ade20k": 150,
    }  # fmt: skip


@pytest.mark.parametrize("name", ALL)
def test_miniature_read_end_to_end(name: str, tmp_path: Path):
    make_benchmark(name, tmp_path)
    dataset = datasets.open_dataset(name, tmp_path)
    assert [s.sample_id for s in dataset.samples] == SAMPLE_IDS[name]
    for sample, expected in zip(dataset.samples, expected_labels(name), strict=True):
        label = dataset.load_label(sample)
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, expected)
        image = dataset.load_image(sample)
        assert image.shape == (*expected.shape, 3) and image.dtype == np.uint8


def test_reduce_zero_label_matches_mmseg():
    raw = np.array([[0, 1, 2], [150, 255, 0]], np.uint8)
    np.testing.assert_array_equal(datasets.reduce_zero_label(raw), [[255, 0, 1], [149, 255, 255]])


@pytest.mark.parametrize("name", ALL)
def test_vocabulary_matches_the_dataset(name: str):
    vocabulary = datasets.benchmark_vocabulary(name)
    spec = datasets.SPECS[name]
    assert vocabulary.num_classes == spec.num_classes
    assert (vocabulary.class_names[0] == "background") == spec.has_background


def test_voc21_background_is_the_sclip_line():
    from clipsam.engine.vocabulary import BACKGROUND_SYNONYMS

    for name in ("voc21", "coco-object"):
        assert datasets.benchmark_vocabulary(name).synonyms[0] == BACKGROUND_SYNONYMS
    assert datasets.benchmark_vocabulary("context60").synonyms[0] == ("background",)


def test_missing_dataset_names_layout_and_source(tmp_path: Path):
    with pytest.raises(ClipsamError) as info:
        datasets.open_dataset("voc21", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert f"{tmp_path}/VOCdevkit/VOC2012/{{JPEGImages/*.jpg, SegmentationClass/*.png, " in message
    assert "ImageSets/Segmentation/val.txt" in message and "VOCtrainval_11-May-2012" in message


def test_missing_label_file_is_reported(tmp_path: Path):
    root = make_benchmark("cityscapes", tmp_path)
    next(root.glob("gtFine/val/lindau/*.png")).unlink()
    with pytest.raises(
        ClipsamError, match=r"1 of 2 samples lack files.*gtFine/val/\*\*/\*_gtFine_labelTrainIds"
    ):
        datasets.open_dataset("cityscapes", tmp_path)


def test_missing_split_file_is_reported(tmp_path: Path):
    root = make_benchmark("context59", tmp_path)
    (root / "ImageSets/SegmentationContext/val.txt").unlink()
    with pytest.raises(ClipsamError, match="split file .* does not exist.*pascal_context.py"):
        datasets.open_dataset("context59", tmp_path)


def test_out_of_range_label_is_a_malformed_dataset(tmp_path: Path):
    make_benchmark("cityscapes", tmp_path)
    dataset = datasets.open_dataset("cityscapes", tmp_path)
    write_label(dataset.samples[0].label_path, np.full((3, 5), 33, np.uint8), palette=False)  # a raw labelId
    with pytest.raises(ClipsamError, match="class id 33, outside 0..18 and 255"):
        dataset.load_label(dataset.samples[0])


def test_rgb_label_is_a_malformed_dataset(tmp_path: Path):
    make_benchmark("ade20k", tmp_path)
    dataset = datasets.open_dataset("ade20k", tmp_path)
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(dataset.samples[0].label_path)
    with pytest.raises(ClipsamError, match="expected one channel of class ids"):
        dataset.load_label(dataset.samples[0])


def test_unknown_dataset():
    with pytest.raises(ClipsamError, match="unknown dataset 'voc'; choose one of: voc21, voc20"):
        datasets.get_spec("voc")
