"""Readers of the eight SCLIP benchmarks in the on-disk layouts MMSegmentation 1.x expects.

Each dataset lives in a folder under `--data-dir` (default data/benchmarks), named as MMSeg's data preparation
guide names it (VOCdevkit/VOC2012, coco_stuff164k, ...), or in the original project's layout, found when the
MMSeg folder is absent: pascal-voc = the contents of VOC2012/; coco-stuff = COCO-Stuff's images/ and
annotations/ (raw stuffthingmaps ids or converted train ids). Samples come from a split file (VOC, Context) or
from a sorted recursive scan of the image folder (the rest), as mmseg's BaseSegDataset does. Labels are
PNGs of class indices (palette PNGs give their indices); with reduce_zero_label, 0 → 255 (ignored) and the
rest − 1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from clipsam.engine.errors import ClipsamError, InputImageError
from clipsam.engine.eval.metrics import IGNORE_INDEX
from clipsam.engine.image_io import DEFAULT_MAX_PIXELS, load_image
from clipsam.engine.vocabulary import Vocabulary

DATA_DIR = Path(__file__).resolve().parents[1] / "data"  # engine/data: the class files
DEFAULT_DATA_DIR = Path("data/benchmarks")
MMSEG_GUIDE = (
    "https://github.com/open-mmlab/mmsegmentation/blob/main/docs/en/user_guides/2_dataset_prepare.md"
)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a benchmark lives and how its labels read.

    folder: the dataset root relative to the data dir. image_dir / label_dir: relative to the root.
    split_file: relative to the root (one sample id per line) or None = scan image_dir recursively.
    num_classes: classes after reduce_zero_label. class_file: in engine/data/.
    has_background: class 0 is a background class (gets no SAM2 prompt; takes low-confidence pixels).
    obtain: how to get and convert the data (one sentence).
    """

    name: str
    title: str
    folder: str
    image_dir: str
    label_dir: str
    image_suffix: str
    label_suffix: str
    split_file: str | None
    num_classes: int
    reduce_zero_label: bool
    class_file: str
    has_background: bool
    obtain: str
    raw_coco_stuff_ids: bool = False  # labels hold COCO-Stuff's 182 raw ids (stuffthingmaps), not train ids

    def layout(self) -> str:
        """The expected layout in one line, e.g. 'VOCdevkit/VOC2012/{JPEGImages/*.jpg, ...}'."""
        parts = [
            f"{self.image_dir}/{'**/' if self.split_file is None else ''}*{self.image_suffix}",
            f"{self.label_dir}/{'**/' if self.split_file is None else ''}*{self.label_suffix}",
        ]
        if self.split_file:
            parts.append(self.split_file)
        return f"{self.folder}/{{{', '.join(parts)}}}"


_VOC_OBTAIN = "download VOCtrainval_11-May-2012.tar from the PASCAL VOC site and extract it into the data dir"
_CONTEXT_OBTAIN = (
    "download VOCtrainval_03-May-2010.tar and trainval_merged.json, then run mmseg's "
    "tools/dataset_converters/pascal_context.py (it writes SegmentationClassContext and the split files)"
)
_STUFF_OBTAIN = (
    "download val2017.zip and stuffthingmaps_trainval2017.zip, then run mmseg's "
    "tools/dataset_converters/coco_stuff164k.py (it writes the *_labelTrainIds.png files)"
)

SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "voc21", "PASCAL VOC 2012 (21 classes, with background)", "VOCdevkit/VOC2012", "JPEGImages",
            "SegmentationClass", ".jpg", ".png", "ImageSets/Segmentation/val.txt", 21, False, "voc21.txt",
            True, _VOC_OBTAIN,
        ),
        DatasetSpec(
            "voc20", "PASCAL VOC 2012 (20 classes, background ignored)", "VOCdevkit/VOC2012", "JPEGImages",
            "SegmentationClass", ".jpg", ".png", "ImageSets/Segmentation/val.txt", 20, True, "voc20.txt",
            False, _VOC_OBTAIN,
        ),
        DatasetSpec(
            "context60", "PASCAL Context (60 classes, with background)", "VOCdevkit/VOC2010", "JPEGImages",
            "SegmentationClassContext", ".jpg", ".png", "ImageSets/SegmentationContext/val.txt", 60, False,
            "context60.txt", True, _CONTEXT_OBTAIN,
        ),
        DatasetSpec(
            "context59", "PASCAL Context (59 classes, background ignored)", "VOCdevkit/VOC2010",
            "JPEGImages", "SegmentationClassContext", ".jpg", ".png", "ImageSets/SegmentationContext/val.txt",
            59, True, "context59.txt", False, _CONTEXT_OBTAIN,
        ),
        DatasetSpec(
            "coco-object", "COCO-Object (80 things + background)", "coco_stuff164k", "images/val2017",
            "annotations/val2017", ".jpg", "_instanceTrainIds.png", None, 81, False, "coco_object.txt", True,
            "prepare COCO-Stuff164k as for coco-stuff164k, then run `clipsam convert-coco-object "
            "DATA_DIR/coco_stuff164k` (writes the *_instanceTrainIds.png files)",
        ),
        DatasetSpec(
            "coco-stuff164k", "COCO-Stuff 164k (171 classes)", "coco_stuff164k", "images/val2017",
            "annotations/val2017", ".jpg", "_labelTrainIds.png", None, 171, False, "coco_stuff164k.txt",
            False, _STUFF_OBTAIN,
        ),
        DatasetSpec(
            "cityscapes", "Cityscapes (19 classes)", "cityscapes", "leftImg8bit/val", "gtFine/val",
            "_leftImg8bit.png", "_gtFine_labelTrainIds.png", None, 19, False, "cityscapes.txt", False,
            "download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip, then run mmseg's "
            "tools/dataset_converters/cityscapes.py (it writes the *_gtFine_labelTrainIds.png files)",
        ),
        DatasetSpec(
            "ade20k", "ADE20K (150 classes)", "ade/ADEChallengeData2016", "images/validation",
            "annotations/validation", ".jpg", ".png", None, 150, True, "ade20k.txt", False,
            "download ADEChallengeData2016.zip and extract it into DATA_DIR/ade",
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One image and its label file. sample_id: the split-file id, or the path under the image dir without
    the suffix (e.g. 'frankfurt/frankfurt_000000_000294')."""

    sample_id: str
    image_path: Path
    label_path: Path


class BenchmarkDataset:
    """The samples of one benchmark, in evaluation order, with label decoding."""

    def __init__(self, spec: DatasetSpec, data_dir: Path, samples: list[Sample]):
        self.spec = spec
        self.data_dir = data_dir
        self.root = data_dir / spec.folder
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, sample: Sample) -> np.ndarray:
        """uint8 [H, W, 3] RGB (EXIF orientation applied, as mmcv's cv2 reader does)."""
        try:
            return load_image(sample.image_path)
        except InputImageError as err:
            raise self.error(f"{err}") from None

    def load_label(self, sample: Sample) -> np.ndarray:
        """uint8 [H, W] class ids 0..C-1 or 255 (ignored), after reduce_zero_label; image frame."""
        try:
            with Image.open(sample.label_path) as picture:
                width, height = picture.size  # the header: refused before decoding
                if width * height > DEFAULT_MAX_PIXELS:
                    raise self.error(
                        f"label '{sample.label_path}' has {width}×{height} = {width * height:,} pixels, more "
                        f"than the limit of {DEFAULT_MAX_PIXELS:,}"
                    )
                raw = np.asarray(picture)
        except Image.DecompressionBombError as err:
            raise self.error(f"label '{sample.label_path}' is too large ({err})") from None
        except (OSError, UnidentifiedImageError) as err:
            raise self.error(f"label '{sample.label_path}' cannot be read ({err})") from None
        if raw.ndim != 2:
            raise self.error(
                f"label '{sample.label_path}' has shape {raw.shape}, expected one channel of class ids"
            )
        if self.spec.raw_coco_stuff_ids and raw.max(initial=0) <= 255:
            raw = coco_stuff_train_ids(raw.astype(np.uint8))
        label = reduce_zero_label(raw) if self.spec.reduce_zero_label else raw.astype(np.uint8)
        bad = (label >= self.spec.num_classes) & (label != IGNORE_INDEX)
        if raw.max(initial=0) > 255 or bad.any():
            value = int(raw.max()) if raw.max(initial=0) > 255 else int(label[bad][0])
            raise self.error(
                f"label '{sample.label_path}' holds class id {value}, outside 0..{self.spec.num_classes - 1} "
                f"and {IGNORE_INDEX} (raw ids instead of the converted train ids?)"
            )
        return label

    def error(self, what: str) -> ClipsamError:
        return dataset_error(self.spec, self.data_dir, what)


def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
    """mmseg's reduce_zero_label: uint8 [H, W], 0 → 255, 255 stays 255, every other id − 1."""
    label = raw.astype(np.int64)
    label[label == 0] = 256
    label -= 1
    label[label == 254] = IGNORE_INDEX
    return label.clip(0, 255).astype(np.uint8)


# The original project's dataset names and folders under the data dir.
ORIGINAL_NAMES = {"pascal-voc": "voc21", "coco-stuff": "coco-stuff164k"}
ORIGINAL_FOLDERS = {"voc21": "pascal-voc", "voc20": "pascal-voc", "coco-stuff164k": "coco-stuff"}
# COCO-Stuff's raw label ids (0..181, 255 unlabeled) that no class uses (11 thing ids COCO never annotated);
# the other 171 ids, in order, are the train ids 0..170 (as mmseg's coco_stuff164k converter maps them).
COCO_STUFF_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)


def dataset_names() -> tuple[str, ...]:
    return tuple(SPECS) + tuple(ORIGINAL_NAMES)


def get_spec(name: str) -> DatasetSpec:
    """The spec of a dataset name, or of an original project's name (pascal-voc, coco-stuff)."""
    name = ORIGINAL_NAMES.get(name, name)
    if name not in SPECS:
        raise ClipsamError(f"unknown dataset '{name}'; choose one of: {', '.join(dataset_names())}")
    return SPECS[name]


def coco_stuff_train_ids(raw: np.ndarray) -> np.ndarray:
    """uint8 [H, W] COCO-Stuff raw ids (0..181, 255) → train ids 0..170; unused ids and 255 → 255."""
    table = np.full(256, IGNORE_INDEX, np.uint8)
    used = [i for i in range(182) if i not in COCO_STUFF_UNUSED_IDS]
    table[used] = np.arange(len(used), dtype=np.uint8)
    return table[raw]


def original_layout(spec: DatasetSpec, data_dir: Path) -> DatasetSpec | None:
    """The spec read from the original project's folder when it exists under data_dir, else None.

    pascal-voc holds VOC2012's JPEGImages, SegmentationClass and ImageSets; coco-stuff holds images/val2017
    and annotations/val2017 with either *_labelTrainIds.png (converted) or the raw <id>.png stuffthingmaps.
    """
    folder = ORIGINAL_FOLDERS.get(spec.name)
    if folder is None or not (data_dir / folder).is_dir():
        return None
    if spec.name == "voc21" or spec.name == "voc20":
        return replace(spec, folder=folder)
    converted = any((data_dir / folder / spec.label_dir).glob(f"*{spec.label_suffix}"))
    if converted:
        return replace(spec, folder=folder)
    return replace(spec, folder=folder, label_suffix=".png", raw_coco_stuff_ids=True)


def dataset_error(spec: DatasetSpec, data_dir: Path, what: str) -> ClipsamError:
    """One line: what is wrong, the exact layout expected under the data dir, and how to obtain it."""
    folder = ORIGINAL_FOLDERS.get(spec.name)
    original = (
        f" or the original project's {data_dir}/{folder}/{{{spec.layout().split('{', 1)[1]}"
        if folder and spec.folder != folder
        else ""
    )
    return ClipsamError(
        f"{spec.name}: {what}; expected {data_dir}/{spec.layout()} (MMSegmentation layout){original}; "
        f"to obtain it: {spec.obtain} ({MMSEG_GUIDE})"
    )


def open_dataset(name: str, data_dir: Path | str = DEFAULT_DATA_DIR) -> BenchmarkDataset:
    """The benchmark's samples under data_dir; a ClipsamError naming the expected layout when absent."""
    spec = get_spec(name)
    data_dir = Path(data_dir)
    if not (data_dir / spec.folder).is_dir():
        spec = original_layout(spec, data_dir) or spec
    root = data_dir / spec.folder
    for folder in (root, root / spec.image_dir, root / spec.label_dir):
        if not folder.is_dir():
            raise dataset_error(spec, data_dir, f"folder '{folder}' does not exist")
    samples = _split_samples(spec, root, data_dir) if spec.split_file else _scanned_samples(spec, root)
    if not samples:
        raise dataset_error(spec, data_dir, f"no '*{spec.image_suffix}' images in '{root / spec.image_dir}'")
    missing = [s for s in samples if not s.image_path.is_file() or not s.label_path.is_file()]
    if missing:
        first = missing[0]
        absent = first.image_path if not first.image_path.is_file() else first.label_path
        raise dataset_error(
            spec, data_dir, f"{len(missing)} of {len(samples)} samples lack files, e.g. '{absent}'"
        )
    return BenchmarkDataset(spec, data_dir, samples)


def _split_samples(spec: DatasetSpec, root: Path, data_dir: Path) -> list[Sample]:
    split = root / str(spec.split_file)
    if not split.is_file():
        raise dataset_error(spec, data_dir, f"split file '{split}' does not exist")
    ids = [line.strip() for line in split.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [
        Sample(
            i,
            root / spec.image_dir / f"{i}{spec.image_suffix}",
            root / spec.label_dir / f"{i}{spec.label_suffix}",
        )
        for i in ids
    ]


def _scanned_samples(spec: DatasetSpec, root: Path) -> list[Sample]:
    image_root = root / spec.image_dir
    images = sorted(
        image_root.rglob(f"*{spec.image_suffix}"), key=lambda p: p.relative_to(image_root).as_posix()
    )
    samples = []
    for image in images:
        relative = image.relative_to(image_root).as_posix()
        sample_id = relative[: -len(spec.image_suffix)]
        samples.append(Sample(sample_id, image, root / spec.label_dir / f"{sample_id}{spec.label_suffix}"))
    return samples


def benchmark_vocabulary(name: str) -> Vocabulary:
    """The benchmark's class file (engine/data/) as a Vocabulary; with a background class, class 0 is shown
    as 'background' (its synonyms are still the stuff words of the file)."""
    spec = get_spec(name)
    vocabulary = Vocabulary.from_file(DATA_DIR / spec.class_file)
    if vocabulary.num_classes != spec.num_classes:
        raise ClipsamError(
            f"class file {spec.class_file} has {vocabulary.num_classes} classes, "
            f"{name} has {spec.num_classes}"
        )
    if spec.has_background:
        vocabulary = replace(vocabulary, class_names=("background", *vocabulary.class_names[1:]))
    return vocabulary
