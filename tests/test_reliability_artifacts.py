"""The artifact manifest trusted only as far as its schema and its hashes: a missing or mistyped field is
named in one line, and every graph and text feature file must match its recorded size and sha256."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clipsam.engine.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    ArtifactError,
    file_digest,
    read_manifest,
    write_manifest,
)
from tests.cli_helpers import linked_copy, run_cli
from tests.reliability_helpers import assert_single_line, small_png

WORDS = ("sky", "car", "road")


def make_artifacts(folder: Path) -> Path:
    """A folder with the manifest's whole structure and small stand-in files (the schema and the hashes are
    under test here, not the graphs)."""
    folder.mkdir()
    graphs = {}
    for name in ("sclip_tower", "sam2_encoder", "sam2_decoder"):
        path = folder / f"{name}.onnx"
        path.write_bytes(name.encode() * 50)
        graphs[name] = {"file": path.name, "bytes": path.stat().st_size, "sha256": file_digest(path)}
        graphs[name].update(inputs=[], outputs=[])
    graphs["sclip_tower"].update(patch_size=16, preprocessing={})
    rows = folder / "text" / "text"
    rows.mkdir(parents=True)
    for index, word in enumerate(WORDS):
        np.save(rows / f"{word}.npy", np.full(8, index + 1, np.float32))
    models = {
        "sclip": {
            "name": "sclip-vit-b16",
            "weights_id": "abc",
            "weights": "sha256:abc",
            "random_weights": False,
        },
        "sam2": {"name": "sam2.1-hiera-tiny", "weights_id": "r", "weights": "random-init, seed 0", "seed": 0},
    }
    models["sam2"]["random_weights"] = True
    data = {"clipsam_version": "0.1.0", "models": models, "graphs": graphs}
    data["text_features"] = {"dir": "text", "templates": "openai-imagenet-80"}
    write_manifest(folder, data)
    return folder


def _edit(folder: Path, change) -> None:
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture()
def art(tmp_path: Path) -> Path:
    return make_artifacts(tmp_path / "art")


def test_a_sound_folder_reads_and_lists_every_text_file(art):
    manifest = read_manifest(art)
    assert manifest.data["format_version"] == FORMAT_VERSION == 2
    assert sorted(manifest.data["text_features"]["files"]) == [f"text/text/{w}.npy" for w in sorted(WORDS)]
    assert manifest.model_random("sam2") and not manifest.model_random("sclip")


def _delete(*keys):
    def change(data):
        for key in keys[:-1]:
            data = data[key]
        del data[keys[-1]]

    return change


def _set(value, *keys):
    def change(data):
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (_delete("models"), "field 'models' is missing"),
        (_delete("graphs", "sam2_encoder", "sha256"), "field 'graphs.sam2_encoder.sha256' is missing"),
        (_delete("models", "sam2", "weights_id"), "field 'models.sam2.weights_id' is missing"),
        (_delete("text_features"), "field 'text_features' is missing"),
        (_delete("text_features", "files"), "field 'text_features.files' is missing"),
        (
            _set("12", "graphs", "sam2_decoder", "bytes"),
            "'graphs.sam2_decoder.bytes' must be an integer, not str",
        ),
        (_set(True, "graphs", "sam2_decoder", "bytes"), "'graphs.sam2_decoder.bytes' must be an integer"),
        (
            _set("yes", "models", "sam2", "random_weights"),
            "'models.sam2.random_weights' must be true or false",
        ),
        (_set([], "graphs"), "field 'graphs' must be an object, not list"),
        (_set("x" * 64, "graphs", "sam2_decoder", "sha256"), "is not a sha256 hex digest"),
        (_set("../elsewhere.onnx", "graphs", "sam2_decoder", "file"), "outside the artifact folder"),
        (_set("/etc/passwd", "graphs", "sam2_decoder", "file"), "outside the artifact folder"),
        (_set({}, "models"), "lists no model"),
        (_set(1, "format_version"), "has artifact format 1 but this clipsam reads format 2"),
        (_set("other", "format"), "is not a clipsam artifact manifest"),
    ],
)
def test_schema_names_the_field(art, change, fragment):
    _edit(art, change)
    with pytest.raises(ArtifactError) as info:
        read_manifest(art)
    assert fragment in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_an_unknown_graph_entry_is_refused_a_stray_graph_file_ignored(art):
    (art / "stray.onnx").write_bytes(b"never loaded: only listed graphs are")
    read_manifest(art)
    entry = json.loads((art / MANIFEST_NAME).read_text())["graphs"]["sam2_decoder"]
    _edit(art, _set({**entry, "file": "stray.onnx"}, "graphs", "sam2_mystery"))
    with pytest.raises(ArtifactError, match="'graphs.sam2_mystery' is not one this clipsam knows"):
        read_manifest(art)


def test_swapped_text_rows_are_refused(art):
    rows = art / "text" / "text"
    sky, car = (rows / "sky.npy").read_bytes(), (rows / "car.npy").read_bytes()
    (rows / "sky.npy").write_bytes(car)
    (rows / "car.npy").write_bytes(sky)  # same sizes: only the hashes tell
    with pytest.raises(ArtifactError, match="text feature file .* does not match its manifest"):
        read_manifest(art)


def test_added_or_removed_text_files_are_refused(art):
    rows = art / "text" / "text"
    shutil.copy(rows / "sky.npy", rows / "sea.npy")
    with pytest.raises(ArtifactError, match="sea.npy' is not listed in the manifest"):
        read_manifest(art)
    (rows / "sea.npy").unlink()
    (rows / "car.npy").unlink()
    with pytest.raises(ArtifactError, match="car.npy' listed in the manifest is missing"):
        read_manifest(art)


def test_truncated_graph_is_refused(art):
    graph = art / "sam2_encoder.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        read_manifest(art)


@pytest.mark.parametrize("kind", ["not_json", "directory", "binary", "empty"])
def test_unreadable_manifests(art, kind):
    path = art / MANIFEST_NAME
    path.unlink()
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes({"not_json": b"{ nope", "binary": b"\xff\xfe\x00\x81", "empty": b""}[kind])
    fragment = "is a folder" if kind == "directory" else "is not a readable manifest"
    with pytest.raises(ArtifactError, match=fragment):
        read_manifest(art)


def test_the_cli_names_the_missing_field_in_one_line(art, tmp_path, capsys):
    _edit(art, _delete("graphs", "sam2_encoder", "bytes"))
    image = small_png(tmp_path / "in.png")
    args = ["segment", "--image", image, "-V", "sky", "--artifacts", art, "--backend", "onnxruntime"]
    code, _, err = run_cli([*args, "--output", tmp_path / "o.png"], capsys)
    assert_single_line(code, err, 2, "clipsam: error: ", "field 'graphs.sam2_encoder.bytes' is missing")
    assert not (tmp_path / "o.png").exists()


def test_export_hashes_text_and_export_text_keeps_the_manifest_true(
    tiny_artifacts, tiny_clip_checkpoint, tmp_path, capsys
):
    """A real export lists its text files; `export-text` adds a word and records it (graphs linked, the
    text folder copied so the session's artifacts stay as they are)."""
    folder = linked_copy(tiny_artifacts, tmp_path / "art")
    before = read_manifest(folder).data["text_features"]["files"]
    assert before and all(name.startswith("text/") for name in before)
    code, _, err = run_cli(
        ["export-text", folder, "-V", "lighthouse", "--clip-checkpoint", tiny_clip_checkpoint], capsys
    )
    assert code == 0, err
    after = read_manifest(folder).data["text_features"]["files"]
    assert len(after) == len(before) + 1 and set(before) < set(after)
