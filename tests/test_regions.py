"""Issue 26's accuracy mode against the slow references of tests/reference/regions_reference.py: the
region-restricted last block (a: one region = SCLIP, b: locality), the vote (c), the region map and patch ids,
the exported region tower's parity, and the torch module's agreement with the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from clipsam.engine.regions import RegionOptions, network_labels, patch_regions, regions_from_candidates, vote
from clipsam.engine.types import DenseMap, RegionMap, RleCandidates
from clipsam.export.clip_model import SclipModel, load_sclip
from clipsam.export.onnx_sclip import export_sclip_tower
from clipsam.export.onnx_sclip_regions import export_sclip_region_tower
from clipsam.export.onnx_utils import forbidden_ops
from clipsam.kernels import rle as rle_codec
from tests.reference import regions_reference as ref

TOLERANCE = 1e-4  # fp32 max abs, as the other graphs
SETTINGS = RegionOptions().record()


@pytest.fixture(scope="module")
def tiny(tiny_clip_checkpoint: Path) -> SclipModel:
    return load_sclip(tiny_clip_checkpoint)


def _crops(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def _region_map(labels: np.ndarray) -> RegionMap:
    count = int(labels.max())
    return RegionMap(labels=labels.astype(np.int32), iou=np.ones(count, np.float32), settings=SETTINGS)


# --- (a) one region covering every patch is plain SCLIP -----------------------------------------------------


def test_one_region_everywhere_is_plain_sclip(tiny: SclipModel):
    crops = _crops(2, 1)
    one = np.ones((2, 196), np.int32)
    restricted = ref.encode_with_regions(tiny, crops, one)
    assert torch.equal(restricted, ref.encode_with_regions(tiny, crops, None))
    assert torch.equal(restricted, ref.encode_with_regions(tiny, crops, np.zeros_like(one)))  # region 0 too
    with torch.inference_mode():
        plain = tiny.encode_crops(crops)
        fast = tiny.encode_crops_with_regions(crops, torch.from_numpy(one))
    assert torch.equal(fast, plain)  # M = 0 adds exactly nothing
    assert (restricted - plain).abs().max() <= 1e-5  # the reference's own op order


def test_mask_of_the_definition():
    mask = ref.attention_mask([1, 1, 2, 0])
    allowed = torch.isfinite(mask)
    expected = torch.tensor(
        [  # CLS, 1, 1, 2, 0
            [1, 1, 1, 1, 1],
            [1, 1, 1, 0, 1],
            [1, 1, 1, 0, 1],
            [1, 0, 0, 1, 1],
            [1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected) and (mask[allowed] == 0).all()


# --- (b) locality at the last block -----------------------------------------------------------------------


def test_a_patch_sees_only_its_region_and_region_zero(tiny: SclipModel):
    with torch.inference_mode():
        x = ref.tokens_before_last(tiny, _crops(1, 2))[0]  # [1 + L, C]
    regions = [1 + (i % 3) for i in range(196)]  # ids 1, 2, 3 interleaved
    regions[10] = 0
    patch = 4  # region 2 (token 5)
    token = patch + 1
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))

    def output(tokens: list[int]) -> torch.Tensor:
        changed = x.clone()
        changed[tokens] += noise[tokens]
        with torch.inference_mode():
            return ref.last_block(tiny, changed, regions)[token]

    base = output([])
    others = [1 + i for i, r in enumerate(regions) if r not in (0, regions[patch])]
    own = [1 + i for i, r in enumerate(regions) if r == regions[patch] and i != patch]
    assert torch.equal(output(others), base)  # other non-zero regions: no effect at all
    assert (output(own) - base).abs().max() > 1e-3  # its own region: an effect
    assert (output([1 + 10]) - base).abs().max() > 1e-5  # a region-0 patch: attended by everyone
    assert (output([0]) - base).abs().max() > 1e-5  # the CLS token: attended as in SCLIP


def test_torch_module_and_reference_agree_on_random_regions(tiny: SclipModel):
    crops = _crops(3, 4)
    ids = torch.randint(0, 6, (3, 196), generator=torch.Generator().manual_seed(5), dtype=torch.int32)
    with torch.inference_mode():
        fast = tiny.encode_crops_with_regions(crops, ids)
        plain = tiny.encode_crops(crops)
    expected = ref.encode_with_regions(tiny, crops, ids.numpy())
    assert (fast - expected).abs().max() <= 1e-5
    assert (fast - plain).abs().max() > 1e-3  # the restriction does change the features


# --- the exported region tower ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def region_graph(tiny: SclipModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("regions-onnx") / "sclip_tower_regions.onnx"
    return path, export_sclip_region_tower(tiny, path)


def test_region_graph_parity_with_the_reference(tiny: SclipModel, region_graph):
    path, report = region_graph
    assert report["forbidden_ops"] == [] and max(report["parity"].values()) <= TOLERANCE
    assert report["io_specs"]["inputs"][1] == {
        "name": "patch_regions",
        "shape": ["num_crops", 196],
        "dtype": "int32",
    }
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    crops = _crops(4, 6)
    ids = np.random.default_rng(7).integers(0, 5, (4, 196)).astype(np.int32)
    ids[1] = 3  # one window entirely in one region
    ids[2, :100] = 0  # one half in no region
    (exported,) = session.run(["patch_features"], {"crops": crops.numpy(), "patch_regions": ids})
    expected = ref.encode_with_regions(tiny, crops, ids).numpy()
    assert np.abs(exported - expected).max() <= TOLERANCE
    assert not forbidden_ops(report["op_census"]) and "Log" in report["op_census"]  # M built in the graph


def test_region_graph_with_one_region_is_the_plain_graph(tiny: SclipModel, region_graph, tmp_path: Path):
    plain_path = tmp_path / "sclip_tower.onnx"
    export_sclip_tower(tiny, plain_path)
    crops = _crops(2, 8).numpy()
    plain = ort.InferenceSession(str(plain_path), providers=["CPUExecutionProvider"])
    region = ort.InferenceSession(str(region_graph[0]), providers=["CPUExecutionProvider"])
    (expected,) = plain.run(["patch_features"], {"crops": crops})
    (got,) = region.run(["patch_features"], {"crops": crops, "patch_regions": np.ones((2, 196), np.int32)})
    assert np.abs(got - expected).max() <= TOLERANCE


# --- (c) the vote ------------------------------------------------------------------------------------------


def _dense(pred: np.ndarray, classes: int) -> DenseMap:
    probs = np.random.default_rng(0).random((classes, *pred.shape)).astype(np.float32)
    return DenseMap(
        probs=probs, pred=pred.astype(np.int32), class_names=tuple(f"c{i}" for i in range(classes))
    )


def test_vote_on_a_hand_made_map_with_ties():
    pred = np.array(
        [
            [1, 1, 2, 2, 0, 3],
            [1, 2, 2, 2, 3, 3],
            [3, 3, 1, 1, 3, 0],
        ]
    )
    labels = np.array(
        [
            [1, 1, 1, 2, 0, 0],  # region 1: {1, 1, 2, 1, 2, 2} tie 1 vs 2 → 1 (lower id)
            [1, 1, 1, 2, 0, 0],  # region 2: {2, 2, 1} → 2
            [3, 3, 2, 3, 0, 0],  # region 3: {3, 3, 1} → 3; region 0 keeps its labels
        ]
    )
    dense = _dense(pred, 4)
    voted = vote(dense, _region_map(labels))
    expected = np.array(
        [
            [1, 1, 1, 2, 0, 3],
            [1, 1, 1, 2, 3, 3],
            [3, 3, 2, 3, 3, 0],
        ]
    )
    np.testing.assert_array_equal(voted.pred, expected)
    np.testing.assert_array_equal(voted.pred, ref.vote(pred, labels))
    assert voted.probs is dense.probs and voted.class_names == dense.class_names


def test_vote_matches_the_reference_on_random_maps():
    rng = np.random.default_rng(9)
    for _ in range(5):
        pred = rng.integers(0, 5, (30, 40))
        labels = rng.integers(0, 7, (30, 40))
        labels[labels == 6] = 0
        np.testing.assert_array_equal(vote(_dense(pred, 5), _region_map(labels)).pred, ref.vote(pred, labels))


# --- regions and patch ids ---------------------------------------------------------------------------------


def _blob_masks(rng: np.random.Generator, count: int, hw: tuple[int, int]) -> np.ndarray:
    height, width = hw
    masks = np.zeros((count, height, width), bool)
    for b in range(count):
        y0, x0 = rng.integers(0, height - 8), rng.integers(0, width - 8)
        masks[b, y0 : y0 + rng.integers(4, height // 2), x0 : x0 + rng.integers(4, width // 2)] = True
    masks[3] = masks[2]  # an exact duplicate
    masks[4, :, :] = masks[2]
    masks[4, 0, :] = True  # a near duplicate
    return masks


def test_region_map_matches_the_reference():
    rng = np.random.default_rng(11)
    masks = _blob_masks(rng, 24, (48, 64))
    iou = rng.uniform(0.5, 1.0, 24).astype(np.float32)
    iou[7] = iou[8]  # a tie in predicted IoU
    candidates = RleCandidates(rle_codec.encode_batch(masks.view(np.uint8)), iou, np.zeros(24, np.int32), iou)
    options = RegionOptions(points_per_side=5, min_iou=0.7, min_region_size=20, dedupe_iou=0.7)
    regions = regions_from_candidates(candidates, (48, 64), options)
    expected = ref.region_map(masks, iou, 0.7, 20, 0.7)
    np.testing.assert_array_equal(regions.labels, expected)
    assert regions.count == int(expected.max()) > 3 and regions.labels.dtype == np.int32
    assert (regions.iou >= 0.7).all() and regions.settings["points_per_side"] == 5


def test_no_mask_passes_gives_region_zero_everywhere():
    masks = np.ones((2, 8, 8), np.uint8)
    iou = np.array([0.2, 0.3], np.float32)
    candidates = RleCandidates(rle_codec.encode_batch(masks), iou, np.zeros(2, np.int32), iou)
    regions = regions_from_candidates(candidates, (8, 8), RegionOptions())
    assert regions.count == 0 and not regions.labels.any()


def test_patch_ids_match_the_reference():
    from clipsam.engine.dense_clip import slide_windows

    rng = np.random.default_rng(12)
    labels = np.zeros((70, 90), np.int32)
    for region in range(1, 6):
        y0, x0 = rng.integers(0, 50), rng.integers(0, 70)
        labels[y0 : y0 + 30, x0 : x0 + 25] = region
    network_hw, patch = (96, 123), 16
    windows = tuple(slide_windows(*network_hw, 64, 32))  # the last column moved back to the border
    got = patch_regions(_region_map(labels), windows, network_hw, patch)
    expected = ref.patch_regions(labels, network_hw, windows, patch)
    assert got.shape == (len(windows), 16) and got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)
    scaled = network_labels(labels, network_hw)
    assert scaled.shape == network_hw and set(np.unique(scaled)) <= set(np.unique(labels))


def test_patch_id_ties_go_to_the_lower_id():
    labels = np.zeros((16, 16), np.int32)
    labels[:, 8:] = 2  # half region 0, half region 2 → 0
    labels_b = np.where(labels == 0, 5, 2).astype(np.int32)  # half 5, half 2 → 2
    windows = ((0, 16, 0, 16),)
    assert patch_regions(_region_map(labels), windows, (16, 16), 16).tolist() == [[0]]
    assert patch_regions(_region_map(labels_b), windows, (16, 16), 16).tolist() == [[2]]


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("points_per_side", 0, "--region-points"),
        ("min_iou", 1.5, "--region-iou"),
        ("min_region_size", -1, "--min-region-size"),
    ],
)
def test_options_are_checked(field: str, value, flag: str):
    from clipsam.engine.errors import ClipsamError

    with pytest.raises(ClipsamError, match=flag):
        RegionOptions(**{field: value})
