"""CLI option rules: variadic --vocabulary, help panels, options that do not apply to the chosen backend,
named models that must be the ones used, class-file hygiene, the original project's dataset names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer

from clipsam.cli.app import app
from clipsam.cli.clipsam_command import expand_variadic
from clipsam.engine.errors import VocabularyError
from clipsam.engine.eval.datasets import COCO_STUFF_UNUSED_IDS, coco_stuff_train_ids, get_spec, open_dataset
from clipsam.engine.vocabulary import BACKGROUND_SYNONYMS, user_class_file, user_vocabulary
from tests.cli_helpers import assert_one_line_error, run_cli

FLAGS = {"--vocabulary": "--vocabulary", "-V": "--vocabulary"}


def _params(command: str, args: list[str]) -> dict:
    """The parsed parameters of `clipsam COMMAND ARGS` (nothing runs)."""
    group = typer.main.get_command(app)
    return group.commands[command].make_context(command, [str(a) for a in args]).params


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--vocabulary", "a", "b", "--prompt", "a"],
            ["--vocabulary", "a", "--vocabulary", "b", "--prompt", "a"],
        ),
        (["-V", "a", "-V", "b"], ["-V", "a", "-V", "b"]),
        (["--vocabulary=a", "b"], ["--vocabulary=a", "--vocabulary", "b"]),
        (["-Va", "b", "-v"], ["-Va", "--vocabulary", "b", "-v"]),
        (["--vocabulary", "a", "--", "b"], ["--vocabulary", "a", "--", "b"]),
        (["--prompt", "x", "y"], ["--prompt", "x", "y"]),
    ],
)
def test_expand_variadic(args, expected):
    assert expand_variadic(args, FLAGS) == expected


def test_variadic_flag_needs_a_value():
    with pytest.raises(ValueError, match="needs at least one value"):
        expand_variadic(["--vocabulary", "--prompt", "a"], FLAGS)
    with pytest.raises(ValueError, match="needs at least one value"):
        expand_variadic(["-V"], FLAGS)


def test_segment_parses_both_vocabulary_forms_and_later_options():
    args = ["-i", "x.png", "--vocabulary", "Stephen Curry", "LeBron James", "floor", "--prompt", "floor"]
    args += ["-V", "crowd", "--vocabulary=background", "-v", "--min-confidence", "0.3"]
    params = _params("segment", args)
    assert params["vocabulary"] == ["Stephen Curry", "LeBron James", "floor", "crowd", "background"]
    assert params["prompt"] == "floor" and params["verbose"] is True and params["min_confidence"] == 0.3
    assert params["output"] == Path("clip_guided_segments.png")


def test_dense_and_export_text_take_several_words():
    params = _params("dense", ["--image", "x.png", "--out", "m.npz", "-V", "sky", "car", "road"])
    assert params["vocabulary"] == ["sky", "car", "road"]
    params = _params("export-text", ["DIR", "-V", "sky", "car", "--vocabulary", "tree"])
    assert params["vocabulary"] == ["sky", "car", "tree"] and params["directory"] == Path("DIR")


def test_flag_without_values_is_one_line(street_image, tmp_path, capsys):
    args = ["segment", "--image", street_image, "--vocabulary", "--prompt", "a", "-o", tmp_path / "o.png"]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "'--vocabulary' needs at least one value")


def test_prompt_after_variadic_vocabulary_reaches_the_check(street_image, tmp_path, capsys):
    """`--prompt` after the values is parsed as --prompt (its class is then checked against all values)."""
    args = ["segment", "--image", street_image, "--vocabulary", "sky", "car", "--prompt", "dog"]
    code, _, err = run_cli([*args, "--random-weights", "-o", tmp_path / "o.png"], capsys)
    assert_one_line_error(code, err, "--prompt 'dog' is not in the vocabulary ('sky', 'car')")


def test_segment_help_is_grouped_and_lists_backends(capsys):
    code, out, _ = run_cli(["segment", "--help"], capsys)
    assert code == 0
    for panel in ("Input:", "Vocabulary:", "Prompts:", "SAM2 and merge:", "Output and edit:", "Inpainting:"):
        assert f"\n{panel}\n" in out, panel
    assert "\nModels and runtime:\n" in out
    backend_help = " ".join(out.split("  --backend", 1)[1].split("\n  --artifacts")[0].split())
    for backend in ("torch", "onnxruntime", "openvino", "tensorrt"):
        assert backend in backend_help


@pytest.mark.parametrize("command", ["export", "export-text", "verify", "segment", "eval"])
def test_every_option_has_help(command):
    click_command = typer.main.get_command(app).commands[command]
    missing = [p.name for p in click_command.params if p.param_type_name == "option" and not p.help]
    assert missing == []


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--checkpoint", "sam.pt"], "--checkpoint"),
        (["--clip-checkpoint", "clip.pt"], "--clip-checkpoint"),
        (["--model-cfg", "sam2.1_hiera_t.yaml"], "--model-cfg"),
        (["--device", "cpu"], "--device"),
        (["--random-weights"], "--random-weights"),
    ],
)
def test_torch_options_with_artifacts_are_errors(street_image, tmp_path, capsys, extra, flag):
    args = ["segment", "--image", street_image, "-V", "sky", "--artifacts", tmp_path, *extra]
    code, _, err = run_cli([*args, "-o", tmp_path / "o.png"], capsys)
    assert_one_line_error(code, err, f"{flag} does not apply to --artifacts")
    assert code == 2 and not (tmp_path / "o.png").exists()


def test_providers_with_torch_is_an_error(street_image, tmp_path, capsys):
    args = ["segment", "--image", street_image, "-V", "sky", "--random-weights", "--providers", "cpu"]
    code, _, err = run_cli([*args, "--backend", "torch", "-o", tmp_path / "o.png"], capsys)
    assert_one_line_error(code, err, "--providers does not apply to --backend torch")


def test_artifacts_alone_imply_onnxruntime(street_image, tmp_path, capsys):
    args = [
        "segment",
        "--image",
        street_image,
        "-V",
        "sky",
        "--artifacts",
        tmp_path,
        "-o",
        tmp_path / "o.png",
    ]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "no manifest.json")  # it went to the artifacts runtime


def test_named_sam_model_must_match_the_artifacts(artifacts, street_image, tmp_path, capsys):
    args = ["segment", "--image", street_image, "-V", "sky", "--artifacts", artifacts]
    code, _, err = run_cli([*args, "--sam-model", "sam2.1-hiera-large", "-o", tmp_path / "o.png"], capsys)
    assert_one_line_error(code, err, "--sam-model sam2.1-hiera-large asked for, but the artifacts hold")
    assert not (tmp_path / "o.png").exists()


def test_model_cfg_and_sam_model_must_agree(street_image, tmp_path, capsys):
    args = ["segment", "--image", street_image, "-V", "sky", "--random-weights", "-o", tmp_path / "o.png"]
    code, _, err = run_cli(
        [*args, "--model-cfg", "sam2_hiera_l.yaml", "--sam-model", "sam2.1-hiera-tiny"], capsys
    )
    assert_one_line_error(code, err, "--model-cfg sam2_hiera_l.yaml is sam2-hiera-large")


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("/nonexistent", "is not a folder (does it exist?) nor a hub id"),
        ("EMPTY_DIR", "holds no model_index.json"),
        ("nobody-org/no-such-inpainting-model", "neither a folder nor in the diffusers cache"),
    ],
)
def test_named_inpaint_model_is_never_replaced(street_image, tmp_path, capsys, model, fragment):
    """With --random-weights, a named model that cannot be loaded is an error, not the random stand-in."""
    if model == "EMPTY_DIR":
        model = tmp_path / "empty-model"
        model.mkdir()
    args = [
        "segment",
        "--image",
        street_image,
        "-V",
        "sky",
        "car",
        "--random-weights",
        "-o",
        tmp_path / "o.png",
    ]
    args += ["--edit", "remove", "--prompt", "car", "--use-inpainting", "--inpaint-model", model]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "o.png").exists()


def test_class_file_background_line_follows_the_vocabulary_rule(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("sky\nbackground\ncar\n", encoding="utf-8")
    from_file = user_class_file(path)
    from_words = user_vocabulary(["sky", "background", "car"])
    assert from_file.synonyms == from_words.synonyms and from_file.class_names == from_words.class_names
    assert from_file.class_names == ("background", "sky", "car")
    assert from_file.synonyms[0] == tuple(w for w in BACKGROUND_SYNONYMS if w != "sky")


def test_class_file_bom_is_stripped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffcar\nroad\n".encode())
    assert user_class_file(path).class_names == ("car", "road")
    path.write_bytes("\ufeffcar\ncar\n".encode())
    with pytest.raises(VocabularyError, match="duplicate class name 'car'"):
        user_class_file(path)


def test_invisible_characters_show_in_messages(street_image, tmp_path, capsys):
    path = tmp_path / "zw.txt"
    path.write_text("car\u200b\nroad\n", encoding="utf-8")
    args = ["segment", "--image", street_image, "--class-file", path, "--prompt", "car", "--random-weights"]
    code, _, err = run_cli([*args, "-o", tmp_path / "o.png"], capsys)
    assert_one_line_error(code, err, r"('car\u200b', 'road')")


def test_original_dataset_names_and_coco_stuff_ids():
    assert get_spec("pascal-voc").name == "voc21" and get_spec("coco-stuff").name == "coco-stuff164k"
    raw = np.array([[0, 10, 11, 12], [90, 91, 181, 255]], np.uint8)
    # From the definition: the used ids, in order, are the train ids; the 11 unused ids and 255 are ignored.
    used = [i for i in range(182) if i not in COCO_STUFF_UNUSED_IDS]
    expected = np.array([[used.index(v) if v in used else 255 for v in row] for row in raw.tolist()])
    np.testing.assert_array_equal(coco_stuff_train_ids(raw), expected)
    assert len(used) == 171 and coco_stuff_train_ids(np.array([181], np.uint8))[0] == 170


def test_original_voc_layout_is_found(tmp_path):
    from tests.test_eval_fixtures import RAW_LABELS, make_benchmark

    make_benchmark("voc21", tmp_path / "mmseg")
    (tmp_path / "mmseg" / "VOCdevkit" / "VOC2012").rename(tmp_path / "pascal-voc")
    data = open_dataset("pascal-voc", tmp_path)
    assert data.root == tmp_path / "pascal-voc" and len(data) == 2
    np.testing.assert_array_equal(data.load_label(data.samples[0]), RAW_LABELS["voc21"][0])


def test_missing_original_layout_names_both_layouts(tmp_path, capsys):
    code, _, err = run_cli(
        ["eval", "--dataset", "pascal-voc", "--data-dir", tmp_path, "--random-weights"], capsys
    )
    assert_one_line_error(code, err, "voc21: folder")
    assert f"{tmp_path}/VOCdevkit/VOC2012/" in err and f"{tmp_path}/pascal-voc/" in err


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--use-sam", "--mode", "sam-vote"], "--use-sam means --mode prompted-sam"),
        (["--model", "ViT-L/14"], "ViT-B/16 only"),
        (["--slide-crop", "64", "--slide-stride", "128"], "stride"),
    ],
)
def test_original_eval_flag_errors(tmp_path, capsys, extra, fragment):
    code, _, err = run_cli(["eval", "--dataset", "pascal-voc", "--data-dir", tmp_path, *extra], capsys)
    assert_one_line_error(code, err, fragment)


def test_eval_protocol_overrides_reach_the_run(tmp_path, capsys, tiny_clip_checkpoint):
    from tests.test_eval_fixtures import make_benchmark

    make_benchmark("voc20", tmp_path / "data")
    args = [
        "eval",
        "--dataset",
        "voc20",
        "--data-dir",
        tmp_path / "data",
        "--clip-checkpoint",
        tiny_clip_checkpoint,
    ]
    args += ["--logit-scale", "65", "--slide-crop", "112", "--slide-stride", "56", "--num-samples", "1"]
    # The engine's tower has its crop size fixed at export: another --slide-crop is one line, no file.
    code, _, err = run_cli([*args, "--output-dir", tmp_path / "engine-out", "--slide-inference"], capsys)
    *built, last = err.strip().splitlines()  # the engine's build lines (first use), then the one error line
    assert code == 2 and "Traceback" not in err and not any("error" in line for line in built), err
    assert last.startswith("clipsam: error: ") and "fixed at export" in last, err
    assert "keep --slide-crop 224, or use --backend torch" in last
    assert not (tmp_path / "engine-out" / "results.json").exists()
    args += ["--backend", "torch"]
    code, out, err = run_cli([*args, "--output-dir", tmp_path / "out", "--slide-inference"], capsys)
    assert code == 0, err
    dense = json.loads((tmp_path / "out" / "results.json").read_text())["config"]["dense_config"]
    assert (dense["logit_scale"], dense["crop"], dense["stride"], dense["short_side"]) == (65.0, 112, 56, 336)
    assert "Pixel Accuracy:" in out and "Dataset: voc20 (1 samples)" in out
