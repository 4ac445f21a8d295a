"""The artifact manifest (`manifest.json` beside the exported graphs): written by export/, read by engine/.

Torch-free. A directory is accepted only when its manifest has this clipsam's format version and every
graph file it lists exists with the recorded size and sha256, so an interrupted or mixed export is refused.

Installed package versions, as the records (artifact manifest, bench record, eval results) report them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import MappingProxyType

from clipsam.engine.errors import ClipsamError
from clipsam.engine.image_io import atomic_output
from clipsam.engine.manifest_schema import manifest_problem

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "clipsam-artifacts"
FORMAT_VERSION = 2  # 2: the text features are hashed too (text_features.files)
GRAPHS = ("sclip_tower", "sam2_encoder", "sam2_decoder")  # every model's required graphs
# The graphs each exported model requires ("models" in the manifest: both, or one with `export --only`).
MODEL_GRAPHS = MappingProxyType({"sclip": ("sclip_tower",), "sam2": ("sam2_encoder", "sam2_decoder")})
FAST_DECODER_GRAPHS = ("sam2_decoder_image", "sam2_fast_decoder")  # optional: the rewritten decoder (issue 5)
# optional: the int8 copy of the SAM2 encoder, the fast precision on onnxruntime's CPU (export/quantize.py);
# the SCLIP tower and the decoder have none (why: benchmarks/README.md).
INT8_GRAPHS = MappingProxyType({"sam2_encoder": "sam2_encoder_int8"})
# optional: static int8 (QDQ) copies of both encoders, the fast precision on CPUs with VNNI, run on OpenVINO
# (export/quantize_static.py).
STATIC_INT8_GRAPHS = MappingProxyType(
    {"sclip_tower": "sclip_tower_int8_static", "sam2_encoder": "sam2_encoder_int8_static"}
)
# optional (exports before issue 16 lack it): CLIP's text tower, token ids -> text features, for words not in
# the exported text bank; its entry names the BPE vocabulary file it reads ("vocabulary_file").
TEXT_GRAPH = "text_encoder"
# optional (exports before issue 26 lack it): SCLIP's tower with region-restricted attention in its last
# block, crops + patch_regions int32 [N, L] -> patch features; the accuracy mode (`--regions`) runs it.
REGIONS_GRAPH = "sclip_tower_regions"
INT8_COPIES = (*INT8_GRAPHS.values(), *STATIC_INT8_GRAPHS.values())  # what `clipsam export --int8` adds
KNOWN_GRAPHS = (*GRAPHS, *FAST_DECODER_GRAPHS, *INT8_COPIES, TEXT_GRAPH, REGIONS_GRAPH)
PRECISIONS = ("exact", "fast")


class ArtifactError(ClipsamError):
    """An artifact directory is missing, incomplete, corrupt or from an incompatible clipsam."""


@dataclass(frozen=True)
class Manifest:
    """A parsed, verified manifest.

    directory: the artifact folder. data: the JSON record (schema: export/build.py writes it).
    """

    directory: Path
    data: dict

    def graph_path(self, graph: str) -> Path:
        return self.directory / self.data["graphs"][graph]["file"]

    def graph(self, graph: str) -> dict:
        return self.data["graphs"][graph]

    @property
    def graph_names(self) -> tuple[str, ...]:
        """Every graph the manifest lists (the required ones first)."""
        return tuple(self.data["graphs"])

    def has_graphs(self, names: tuple[str, ...]) -> bool:
        return all(name in self.data["graphs"] for name in names)

    @property
    def random_weights(self) -> bool:
        """True when any model of the folder has random weights (the derived top-level summary)."""
        return any(self.model_random(model) for model in self.models)

    @property
    def models(self) -> tuple[str, ...]:
        """The exported models among MODEL_GRAPHS' keys ("sclip", "sam2"), in manifest order."""
        return tuple(name for name in self.data["models"] if name in MODEL_GRAPHS)

    def has_model(self, model: str) -> bool:
        return model in self.data["models"]

    def model_random(self, model: str) -> bool:
        """Whether `model` ("sclip" / "sam2") was exported from seeded random weights rather than a file."""
        entry = self.data["models"][model]
        return bool(entry.get("random_weights", entry.get("seed") is not None))

    @property
    def text_dir(self) -> Path:
        return self.directory / self.data["text_features"]["dir"]

    @property
    def clip_weights_id(self) -> str:
        return self.data["models"]["sclip"]["weights_id"]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, data: dict) -> Path:
    """Write manifest.json atomically (the last file an export writes). With a text_features section, the
    size and sha256 of every text feature file now in its folder are recorded (text_features.files)."""
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}
    record = {**header, **{key: value for key, value in data.items() if key not in header}}
    if "text_features" in record:
        text = record["text_features"]
        record["text_features"] = {**text, "files": _text_file_entries(Path(directory), text["dir"])}
    path = Path(directory) / MANIFEST_NAME
    with atomic_output(path, "w") as stream:
        json.dump(record, stream, indent=1, sort_keys=False)
        stream.write("\n")
    return path


def read_manifest(directory: Path | str, *, check_files: bool = True) -> Manifest:
    """Parse and verify DIR/manifest.json; raises ArtifactError with what to do."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    redo = f"run `clipsam export --out {directory}`"
    if not directory.is_dir():
        raise ArtifactError(f"artifact folder '{directory}' does not exist: {redo}")
    if path.is_dir():
        raise ArtifactError(f"'{path}' is a folder, not a manifest file: {redo}")
    if not path.is_file():
        raise ArtifactError(f"no {MANIFEST_NAME} in '{directory}' (missing or interrupted export): {redo}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"'{path}' is not a readable manifest ({err}): {redo}") from err
    _check_format(data, path, redo)
    manifest = Manifest(directory, data)
    if check_files:
        for graph in manifest.graph_names:
            _check_graph_file(manifest, graph, redo)
        if "text_features" in data:
            _check_text_files(manifest, redo)
    return manifest


def _check_format(data: object, path: Path, redo: str) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise ArtifactError(f"'{path}' is not a clipsam artifact manifest: {redo}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"'{path}' has artifact format {version} but this clipsam reads format {FORMAT_VERSION}: {redo}"
        )
    problem = manifest_problem(data, KNOWN_GRAPHS)
    if problem is None and "sclip" in data["models"] and "text_features" not in data:
        problem = "field 'text_features' is missing (the SCLIP model needs its text features)"
    if problem is not None:
        raise ArtifactError(f"'{path}' is not a valid manifest: {problem}: {redo}")
    models = [name for name in data.get("models", {}) if name in MODEL_GRAPHS]
    if not models:
        raise ArtifactError(f"'{path}' lists no model ({' or '.join(MODEL_GRAPHS)}): {redo}")
    required = [graph for name in models for graph in MODEL_GRAPHS[name]]
    missing = [g for g in required if g not in data.get("graphs", {})]
    if missing:
        raise ArtifactError(f"'{path}' lists no {', '.join(missing)} graph: {redo}")


def _check_graph_file(manifest: Manifest, graph: str, redo: str) -> None:
    entry = manifest.graph(graph)
    path = manifest.graph_path(graph)
    if not path.is_file():
        raise ArtifactError(f"graph file '{path}' listed in the manifest is missing: {redo}")
    if path.stat().st_size != entry["bytes"] or file_digest(path) != entry["sha256"]:
        raise ArtifactError(f"graph file '{path}' does not match its manifest (changed or partial): {redo}")
    companion = entry.get("vocabulary_file")
    if companion is not None:
        vocabulary = manifest.directory / companion["file"]
        if not vocabulary.is_file():
            raise ArtifactError(f"vocabulary file '{vocabulary}' listed in the manifest is missing: {redo}")
        if vocabulary.stat().st_size != companion["bytes"] or file_digest(vocabulary) != companion["sha256"]:
            raise ArtifactError(f"vocabulary file '{vocabulary}' does not match its manifest: {redo}")


def _text_file_entries(directory: Path, text_dir: str) -> dict[str, dict]:
    """{path relative to the artifact folder: {"bytes", "sha256"}} of every .npy under its text folder."""
    return {
        path.relative_to(directory).as_posix(): {"bytes": path.stat().st_size, "sha256": file_digest(path)}
        for path in _text_files(directory / text_dir)
    }


def _text_files(folder: Path) -> list[Path]:
    """Every text feature file under `folder` (symlinked folders followed), sorted."""
    found = []
    for root, _, names in os.walk(folder, followlinks=True):
        found.extend(Path(root) / name for name in names if name.endswith(".npy"))
    return sorted(found)


def _check_text_files(manifest: Manifest, redo: str) -> None:
    """Every listed text feature file exists with its size and sha256, and no unlisted one is there (the
    text bank would read it): a swapped, edited or added file would silently relabel classes."""
    listed = manifest.data["text_features"]["files"]
    for name, entry in listed.items():
        path = manifest.directory / name
        if not path.is_file():
            raise ArtifactError(f"text feature file '{path}' listed in the manifest is missing: {redo}")
        if path.stat().st_size != entry["bytes"] or file_digest(path) != entry["sha256"]:
            problem = "does not match its manifest (changed, swapped or partial)"
            raise ArtifactError(f"text feature file '{path}' {problem}: {redo}")
    for path in _text_files(manifest.text_dir):
        if path.relative_to(manifest.directory).as_posix() not in listed:
            raise ArtifactError(
                f"text feature file '{path}' is not listed in the manifest; add words with "
                f"`clipsam export-text {manifest.directory} --vocabulary WORD` only"
            )


def package_versions(packages: Iterable[str], missing: str | None = None) -> dict[str, str | None]:
    """{package: installed version}, `missing` for a package that is not installed."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = missing
    return versions
