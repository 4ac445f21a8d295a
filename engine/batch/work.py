"""One image of a batch, in two halves (for the runner's overlap) or whole (for a Ray Data actor), and the
run's output folder: per-image JSON (and picture), results.jsonl, errors.jsonl, annotations.json, batch.json.

The per-image JSON is `segment --json`'s record (engine/outputs.py) with the image's path as given, written
atomically: a JSON in the folder is complete, which is what --resume trusts. batch.json holds the run's
settings (vocabulary, options, edit, models) so that --resume refuses a folder made with others.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath

from clipsam.engine import image_io, outputs, render
from clipsam.engine.batch.coco import coco_instances
from clipsam.engine.batch.sources import BatchImage
from clipsam.engine.errors import ClipsamError
from clipsam.engine.pipeline import Encoded, Pipeline, SegmentOptions
from clipsam.engine.types import SegmentationResult
from clipsam.engine.vocabulary import Vocabulary

SETTINGS_FILE = "batch.json"
RESULTS_FILE = "results.jsonl"
ERRORS_FILE = "errors.jsonl"
ANNOTATIONS_FILE = "annotations.json"


@dataclass(frozen=True)
class BatchSettings:
    """What every image of a run gets: vocabulary, options, the picture (`edit` as `segment --edit`, target:
    --prompt's class; picture_suffix None: no picture) and the decode limit."""

    vocabulary: Vocabulary
    options: SegmentOptions
    edit: str = "segment"
    target: str | None = None
    picture_suffix: str | None = ".png"
    max_pixels: int = image_io.DEFAULT_MAX_PIXELS

    def record(self, models: dict) -> dict:
        """batch.json: what --resume compares (JSON-normalised)."""
        options = {key: value for key, value in asdict(self.options).items() if key != "regions"}
        regions = None if self.options.regions is None else self.options.regions.record()
        fields = {"class_names": list(self.vocabulary.class_names), "options": options, "regions": regions}
        fields.update({"edit": self.edit, "target": self.target, "picture": self.picture_suffix})
        return json.loads(json.dumps({**fields, "models": models}))


class BatchOutputs:
    """The output folder of a run: where each image's files go, the JSON-lines logs and the COCO file."""

    def __init__(self, folder: Path, settings: BatchSettings):
        self.folder = Path(folder)
        self.settings = settings
        self._lock = threading.Lock()

    def json_path(self, item: BatchImage) -> Path:
        return self.folder / _stem(item.name).with_suffix(".json")

    def picture_path(self, item: BatchImage) -> Path | None:
        suffix = self.settings.picture_suffix
        return None if suffix is None else self.folder / _stem(item.name).with_suffix(suffix)

    def check(self, items: list[BatchImage]) -> None:
        """Usage errors before any work: two images with one output, or an output that is an input."""
        inputs = {os.path.realpath(item.path) for item in items}
        seen: dict[Path, BatchImage] = {}
        for item in items:
            for path in filter(None, (self.json_path(item), self.picture_path(item))):
                other = seen.setdefault(path, item)
                if other is not item:
                    raise ClipsamError(
                        f"'{other.name}' and '{item.name}' would write the same output {path}: "
                        "rename one, or run them separately"
                    )
                if os.path.realpath(path) in inputs:
                    raise ClipsamError(f"--out-dir would overwrite the input image {path}: choose another")

    def start(self, models: dict, resume: bool) -> None:
        """Create the folder; with resume, refuse one made with other settings; else start new logs."""
        record = self.settings.record(models)
        settings = self.folder / SETTINGS_FILE
        if resume and settings.exists():
            try:
                before = json.loads(settings.read_text())
            except (OSError, ValueError) as err:
                message = f"--resume: cannot read {settings} ({err}); run without --resume"
                raise ClipsamError(message) from None
            if before != record:
                changed = sorted(key for key in record if before.get(key) != record.get(key))
                raise ClipsamError(
                    f"--resume: {self.folder} was made with other settings ({', '.join(changed)}); "
                    "give the same options, or another --out-dir"
                )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not resume:
                for name in (RESULTS_FILE, ERRORS_FILE):
                    (self.folder / name).unlink(missing_ok=True)
        except OSError as err:
            raise outputs.write_error(self.folder, err) from None
        outputs.write_json(settings, record)

    def complete(self, item: BatchImage) -> dict | None:
        """The image's record when its JSON is in the folder (atomic writes: present means complete)."""
        try:
            return json.loads(self.json_path(item).read_text())
        except (OSError, ValueError):
            return None

    def write_image(self, item: BatchImage, record: dict, picture) -> None:
        path = self.picture_path(item)
        try:
            self.json_path(item).parent.mkdir(parents=True, exist_ok=True)  # the name's folders, mirrored
        except OSError as err:
            raise outputs.write_error(self.json_path(item).parent, err) from None
        if path is None:
            outputs.write_json(self.json_path(item), record)
        else:
            outputs.write_results(path, picture, self.json_path(item), record)

    def forget(self, item: BatchImage) -> None:
        """A failed image leaves no stale output of an earlier run behind."""
        for path in filter(None, (self.json_path(item), self.picture_path(item))):
            path.unlink(missing_ok=True)

    def log(self, line: dict) -> None:
        """results.jsonl gets every finished image; errors.jsonl the failed ones."""
        names = (RESULTS_FILE, ERRORS_FILE) if line["status"] == "failed" else (RESULTS_FILE,)
        text = json.dumps(line) + "\n"
        with self._lock:
            for name in names:
                with open(self.folder / name, "a", encoding="utf-8") as stream:
                    stream.write(text)

    def write_annotations(self, items: list[BatchImage]) -> Path:
        """annotations.json (COCO instances) from every image whose JSON is in the folder, atomically."""
        records = (
            (index, item.name, record)
            for index, item in enumerate(items, 1)
            if (record := self.complete(item)) is not None
        )
        coco = coco_instances(records, self.settings.vocabulary.class_names)
        path = self.folder / ANNOTATIONS_FILE
        outputs.write_json(path, coco)
        return path


@dataclass(frozen=True)
class Started:
    item: BatchImage
    encoded: Encoded


class ImageWork:
    """One image on a warm pipeline: `start` (read, encoders), `finish` (decoder, merge, files) → its line
    for results.jsonl. Errors are the caller's (runner.attempt turns them into a failed line)."""

    def __init__(self, pipeline: Pipeline, settings: BatchSettings, out: BatchOutputs):
        self.pipeline, self.settings, self.out = pipeline, settings, out

    def start(self, item: BatchImage) -> Started:
        image = image_io.load_image(item.path, self.settings.max_pixels)
        settings = self.settings
        return Started(item, self.pipeline.segment_start(image, settings.vocabulary, settings.options))

    def finish(self, started: Started) -> dict:
        result = self.pipeline.segment_finish(started.encoded)
        result = self._only_target(result)
        picture, settings = None, self.settings
        if settings.picture_suffix is not None:
            picture = render.edit_picture(started.encoded.image, result, settings.edit, settings.target)
        record = outputs.result_to_json(result, str(started.item.path))
        self.out.write_image(started.item, record, picture)
        return done_line(started.item, record)

    def run(self, item: BatchImage) -> dict:
        return self.finish(self.start(item))

    def failed(self, item: BatchImage, reason: str) -> dict:
        return failed_line(item, reason)

    def _only_target(self, result: SegmentationResult) -> SegmentationResult:
        target = self.settings.target
        if target is None or self.settings.edit != "segment":
            return result
        return replace(result, segments=tuple(s for s in result.segments if s.class_name == target))


def done_line(item: BatchImage, record: dict) -> dict:
    return {
        "image": item.name,
        "path": str(item.path),
        "status": "done",
        "segments": len(record["segments"]),
        "counts": record["counts"],
        "timings_ms": record["timings_ms"],
    }


def failed_line(item: BatchImage, reason: str) -> dict:
    return {"image": item.name, "path": str(item.path), "status": "failed", "error": reason}


def skipped_line(item: BatchImage) -> dict:
    return {"image": item.name, "path": str(item.path), "status": "skipped"}


def _stem(name: str) -> Path:
    return Path(*PurePosixPath(name).parts)
