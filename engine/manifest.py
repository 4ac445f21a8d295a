"""The artifact manifest (`manifest.json` beside the exported graphs): written by export/, read by engine/.

Torch-free. A directory is accepted only when its manifest has this clipsam's format version and every
graph file it lists exists with the recorded size and sha256, so an interrupted or mixed export is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from clipsam.engine.errors import ClipsamError
from clipsam.engine.image_io import atomic_output

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "clipsam-artifacts"
FORMAT_VERSION = 1
GRAPHS = ("sclip_tower", "sam2_encoder", "sam2_decoder")  # required
FAST_DECODER_GRAPHS = ("sam2_decoder_image", "sam2_fast_decoder")  # optional: the rewritten decoder (issue 5)
# optional: the int8 copy of the SAM2 encoder, the fast precision on onnxruntime's CPU (export/quantize.py).
# An int8 SCLIP tower was measured 1.5x faster but moves the dense map's prompts (per-segment IoU < 0.99).
INT8_GRAPHS = {"sam2_encoder": "sam2_encoder_int8"}
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
        return bool(self.data["random_weights"])

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
    """Write manifest.json atomically (the last file an export writes)."""
    record = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **data}
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
    return manifest


def _check_format(data: object, path: Path, redo: str) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise ArtifactError(f"'{path}' is not a clipsam artifact manifest: {redo}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"'{path}' has artifact format {version} but this clipsam reads format {FORMAT_VERSION}: {redo}"
        )
    missing = [g for g in GRAPHS if g not in data.get("graphs", {})]
    if missing:
        raise ArtifactError(f"'{path}' lists no {', '.join(missing)} graph: {redo}")


def _check_graph_file(manifest: Manifest, graph: str, redo: str) -> None:
    entry = manifest.graph(graph)
    path = manifest.graph_path(graph)
    if not path.is_file():
        raise ArtifactError(f"graph file '{path}' listed in the manifest is missing: {redo}")
    if path.stat().st_size != entry["bytes"] or file_digest(path) != entry["sha256"]:
        raise ArtifactError(f"graph file '{path}' does not match its manifest (changed or partial): {redo}")


def check_precision(precision: str, backend: str) -> None:
    """ "exact" runs everywhere; "fast" (the INT8_GRAPHS) only on onnxruntime. ClipsamError otherwise."""
    if precision not in PRECISIONS:
        raise ClipsamError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    if precision == "fast" and backend != "onnxruntime":
        raise ClipsamError(
            f"--precision fast runs int8 graphs on onnxruntime, not {backend}: use --backend onnxruntime "
            "with artifacts exported with --int8"
        )
