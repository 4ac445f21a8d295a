"""clipsam's SCLIP reproduces the official code's outputs on a tiny random CLIP (tests/data/golden)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipsam.engine.dense_clip import (
    PRESETS,
    DenseConfig,
    SclipStage,
    class_probabilities,
    crop_logits,
    slide_windows,
    window_features,
    window_logits,
)
from clipsam.engine.errors import ClipsamError, InputImageError
from clipsam.engine.text.bank import TextBank
from clipsam.engine.transforms import normalize_clip
from clipsam.engine.types import TextFeatures
from clipsam.engine.vocabulary import Vocabulary
from clipsam.export.clip_model import load_sclip
from clipsam.reference.sclip import TorchSclip

TOLERANCE = 1e-4
GOLDEN_LINES = ["background, wall, floor", "cat", "bicycle, bike", "tree"]
CONFIG_A = DenseConfig(short_side=0, logit_scale=40.0, prob_thd=0.0, area_thd=None)
CONFIG_B = DenseConfig(short_side=0, logit_scale=65.0, prob_thd=0.1, area_thd=0.1)


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict[str, np.ndarray]:
    """The official code's outputs (tests/data/golden, located by the `golden_dir` fixture of conftest.py)."""
    with np.load(golden_dir / "sclip_golden_outputs.npz") as arrays:
        return {name: arrays[name] for name in arrays.files}


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, tiny_clip_checkpoint: Path) -> TorchSclip:
    model = load_sclip(tiny_clip_checkpoint)
    return TorchSclip(model, TextBank(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    return Vocabulary.from_lines(GOLDEN_LINES)


def _max_abs(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual.astype(np.float64) - expected).max())


def test_vocabulary_gives_the_golden_queries(vocabulary: Vocabulary) -> None:
    assert vocabulary.queries == ("background", "wall", "floor", "cat", "bicycle", "bike", "tree")
    assert vocabulary.query_class.tolist() == [0, 0, 0, 1, 2, 2, 3]


def test_image_normalized(golden: dict[str, np.ndarray]) -> None:
    assert _max_abs(normalize_clip(golden["image_u8"])[None], golden["image_normalized"]) <= TOLERANCE


def test_text_features(golden: dict[str, np.ndarray], network: TorchSclip, vocabulary: Vocabulary) -> None:
    assert _max_abs(network.encode(vocabulary.queries), golden["text_features"]) <= TOLERANCE


def test_crop_dense_features(golden: dict[str, np.ndarray], network: TorchSclip) -> None:
    import torch

    crop = torch.from_numpy(golden["image_normalized"][:, :, :224, :224].copy())
    with torch.no_grad():
        tokens = network.model.dense_tokens(crop).numpy()
    assert _max_abs(tokens, golden["crop_dense_features"]) <= TOLERANCE


def test_crop_logits(golden: dict[str, np.ndarray], network: TorchSclip, vocabulary: Vocabulary) -> None:
    features = network.encode_crops(golden["image_normalized"][:, :, :224, :224])
    text = network.encode(vocabulary.queries)
    assert _max_abs(crop_logits(features, text, (224, 224), 16), golden["crop_logits"]) <= TOLERANCE


@pytest.fixture(scope="module")
def stage(network: TorchSclip) -> SclipStage:
    return SclipStage(network, network)


@pytest.fixture(scope="module")
def text(stage: SclipStage, vocabulary: Vocabulary) -> TextFeatures:
    return stage.text(vocabulary)


def _slide_logits(network: TorchSclip, image: np.ndarray, text: TextFeatures) -> np.ndarray:
    """Window logits of a normalised float32 [3, h, w] network-frame image (no resize)."""
    return window_logits(window_features(network, image, CONFIG_A, image_hw=image.shape[1:]), text.features)


def test_slide_logits(golden: dict[str, np.ndarray], network: TorchSclip, text: TextFeatures) -> None:
    logits = _slide_logits(network, golden["image_normalized"][0], text)
    assert _max_abs(logits[None], golden["slide_logits"]) <= TOLERANCE


@pytest.mark.parametrize("setting", ["a", "b"])
def test_postprocess_from_golden_logits(
    golden: dict[str, np.ndarray], vocabulary: Vocabulary, setting: str
) -> None:
    config = {"a": CONFIG_A, "b": CONFIG_B}[setting]
    probs, pred = class_probabilities(golden["slide_logits"][0].copy(), vocabulary, config)
    assert _max_abs(probs, golden[f"probs_{setting}"]) <= TOLERANCE
    np.testing.assert_array_equal(pred[None], golden[f"pred_{setting}"])


@pytest.mark.parametrize("setting", ["a", "b"])
def test_predict_end_to_end_from_uint8(
    golden: dict[str, np.ndarray], stage: SclipStage, text: TextFeatures, setting: str
) -> None:
    config = {"a": CONFIG_A, "b": CONFIG_B}[setting]
    dense = stage.dense_map(stage.features(golden["image_u8"], config), text, config)
    assert dense.class_names == ("background", "cat", "bicycle", "tree")
    assert dense.pred.dtype == np.int32 and dense.probs.dtype == np.float32
    assert _max_abs(dense.probs, golden[f"probs_{setting}"]) <= TOLERANCE
    np.testing.assert_array_equal(dense.pred[None], golden[f"pred_{setting}"])


def test_settings_b_change_the_prediction(golden: dict[str, np.ndarray]) -> None:
    # Guards the test above against settings that do nothing: area_thd removes class 3 in the golden set.
    assert not np.array_equal(golden["pred_a"], golden["pred_b"])
    assert (golden["pred_b"] == 3).sum() == 0 < (golden["pred_a"] == 3).sum()


# --- The same predictor beyond the golden image: window layout, small images, settings --------------------


def test_slide_windows_align_the_last_window_to_the_border() -> None:
    windows = slide_windows(260, 350, crop=224, stride=112)
    rows = sorted({(y0, y1) for y0, y1, _, _ in windows})
    cols = sorted({(x0, x1) for _, _, x0, x1 in windows})
    assert rows == [(0, 224), (36, 260)] and cols == [(0, 224), (112, 336), (126, 350)]
    assert len(windows) == 6
    assert slide_windows(100, 150, crop=224, stride=112) == [(0, 100, 0, 150)]  # shrunk, not padded
    assert slide_windows(100, 400, crop=224, stride=112) == [
        (0, 100, 0, 224),
        (0, 100, 112, 336),
        (0, 100, 176, 400),
    ]


def test_all_windows_go_through_one_encode_call(network: TorchSclip, vocabulary: Vocabulary) -> None:
    calls = []

    class CountingEncoder:
        patch_size, weights_id = network.patch_size, network.weights_id

        def encode_crops(self, crops: np.ndarray) -> np.ndarray:
            calls.append(crops.shape)
            return network.encode_crops(crops)

    stage, config = SclipStage(CountingEncoder(), network), DenseConfig(short_side=336)
    features = stage.features(np.zeros((240, 320, 3), np.uint8), config)  # network 336×448: 2×3 windows
    dense = stage.dense_map(features, stage.text(vocabulary), config)
    assert calls == [(6, 3, 224, 224)]
    assert dense.probs.shape == (4, 240, 320) and dense.pred.shape == (240, 320)


def test_image_smaller_than_the_crop_is_one_shrunk_window(network: TorchSclip, text: TextFeatures) -> None:
    image = np.random.default_rng(3).standard_normal((3, 100, 150)).astype(np.float32)
    expected = crop_logits(network.encode_crops(image[None]), text.features, (100, 150), 16)[0]  # 6×9 grid
    np.testing.assert_array_equal(_slide_logits(network, image, text), expected)


def test_image_smaller_than_a_patch_is_refused(network: TorchSclip, text: TextFeatures) -> None:
    with pytest.raises(InputImageError, match="smaller than the 16-pixel"):
        _slide_logits(network, np.zeros((3, 10, 300), np.float32), text)


def test_features_are_reusable_across_vocabularies_but_not_across_geometry(
    stage: SclipStage, network: TorchSclip, vocabulary: Vocabulary
) -> None:
    """PatchFeatures are vocabulary-free: one image's features scored against two vocabularies give what
    two full runs give; a config with other windows is refused."""
    image = np.random.default_rng(5).integers(0, 256, (120, 150, 3), dtype=np.uint8)
    config = DenseConfig(short_side=0)
    features = stage.features(image, config)
    other = Vocabulary.from_lines(["cat", "tree"])
    for words in (vocabulary, other):
        fresh = stage.dense_map(stage.features(image, config), stage.text(words), config)
        reused = stage.dense_map(features, stage.text(words), config)
        np.testing.assert_array_equal(reused.probs, fresh.probs)
    with pytest.raises(ClipsamError, match="same short side, crop and stride"):
        stage.dense_map(features, stage.text(other), DenseConfig(short_side=0, stride=100))


@pytest.mark.parametrize(
    "settings",
    [{"prob_thd": -0.1}, {"prob_thd": 1.5}, {"area_thd": 2.0}, {"stride": 0}, {"stride": 300},
     {"logit_scale": 0}, {"short_side": -1}],
)  # fmt: skip
def test_out_of_range_settings_fail_with_one_line(settings: dict) -> None:
    with pytest.raises(ClipsamError) as caught:
        DenseConfig(**settings)
    assert "\n" not in str(caught.value)


def test_presets_follow_the_official_configs() -> None:
    assert set(PRESETS) == {
        "voc21", "context60", "coco-object", "voc20", "context59", "coco-stuff164k", "cityscapes", "ade20k"
    }  # fmt: skip
    assert PRESETS["voc21"] == DenseConfig(336, 224, 112, 65.0, 0.1, 0.1)
    assert PRESETS["coco-object"] == DenseConfig(336, 224, 112, 50.0, 0.1, None)
    assert (PRESETS["coco-stuff164k"].short_side, PRESETS["cityscapes"].short_side) == (448, 560)
    assert PRESETS["ade20k"] == DenseConfig() == PRESETS["voc20"]
