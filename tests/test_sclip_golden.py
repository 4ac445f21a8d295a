"""clipsam's SCLIP reproduces the official code's outputs on a tiny random CLIP (tests/data/golden)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipsam.engine.backends.torch_sclip import TorchSclip
from clipsam.engine.dense_clip import PRESETS, DenseConfig, DensePredictor, crop_logits, slide_windows
from clipsam.engine.errors import ClipsamError, InputImageError
from clipsam.engine.text_bank import TextBank
from clipsam.engine.transforms import normalize_clip
from clipsam.engine.vocabulary import Vocabulary
from clipsam.export.clip_model import load_sclip

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
    assert _max_abs(network.encode_queries(vocabulary.queries), golden["text_features"]) <= TOLERANCE


def test_crop_dense_features(golden: dict[str, np.ndarray], network: TorchSclip) -> None:
    import torch

    crop = torch.from_numpy(golden["image_normalized"][:, :, :224, :224].copy())
    with torch.no_grad():
        tokens = network.model.dense_tokens(crop).numpy()
    assert _max_abs(tokens, golden["crop_dense_features"]) <= TOLERANCE


def test_crop_logits(golden: dict[str, np.ndarray], network: TorchSclip, vocabulary: Vocabulary) -> None:
    features = network.encode_crops(golden["image_normalized"][:, :, :224, :224])
    text = network.encode_queries(vocabulary.queries)
    assert _max_abs(crop_logits(features, text, (224, 224), 16), golden["crop_logits"]) <= TOLERANCE


@pytest.fixture(scope="module")
def predictors(network: TorchSclip, vocabulary: Vocabulary) -> dict[str, DensePredictor]:
    return {
        "a": network.dense_predictor(vocabulary, CONFIG_A),
        "b": network.dense_predictor(vocabulary, CONFIG_B),
    }


def test_slide_logits(golden: dict[str, np.ndarray], predictors: dict[str, DensePredictor]) -> None:
    logits = predictors["a"].slide_logits(golden["image_normalized"][0])
    assert _max_abs(logits[None], golden["slide_logits"]) <= TOLERANCE


@pytest.mark.parametrize("setting", ["a", "b"])
def test_postprocess_from_golden_logits(
    golden: dict[str, np.ndarray], predictors: dict[str, DensePredictor], setting: str
) -> None:
    probs, pred = predictors[setting].postprocess(golden["slide_logits"][0].copy())
    assert _max_abs(probs, golden[f"probs_{setting}"]) <= TOLERANCE
    np.testing.assert_array_equal(pred[None], golden[f"pred_{setting}"])


@pytest.mark.parametrize("setting", ["a", "b"])
def test_predict_end_to_end_from_uint8(
    golden: dict[str, np.ndarray], predictors: dict[str, DensePredictor], setting: str
) -> None:
    dense = predictors[setting].predict(golden["image_u8"])
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

    def counting_encode(crops: np.ndarray) -> np.ndarray:
        calls.append(crops.shape)
        return network.encode_crops(crops)

    text = network.encode_queries(vocabulary.queries)
    predictor = DensePredictor(counting_encode, text, vocabulary, DenseConfig(short_side=336))
    dense = predictor.predict(np.zeros((240, 320, 3), np.uint8))  # network frame 336×448: 2×3 windows
    assert calls == [(6, 3, 224, 224)]
    assert dense.probs.shape == (4, 240, 320) and dense.pred.shape == (240, 320)


def test_image_smaller_than_the_crop_is_one_shrunk_window(
    network: TorchSclip, vocabulary: Vocabulary, predictors: dict[str, DensePredictor]
) -> None:
    image = np.random.default_rng(3).standard_normal((3, 100, 150)).astype(np.float32)
    text = network.encode_queries(vocabulary.queries)
    expected = crop_logits(network.encode_crops(image[None]), text, (100, 150), 16)[0]  # 6×9 patch grid
    np.testing.assert_array_equal(predictors["a"].slide_logits(image), expected)


def test_image_smaller_than_a_patch_is_refused(predictors: dict[str, DensePredictor]) -> None:
    with pytest.raises(InputImageError, match="smaller than the 16-pixel"):
        predictors["a"].slide_logits(np.zeros((3, 10, 300), np.float32))


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
