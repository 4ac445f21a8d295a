"""Building SAM2 models: seeded random weights, checkpoint files, and every way a checkpoint can be wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from clipsam.engine.errors import CheckpointError, ClipsamError
from clipsam.export.checkpoints import file_sha256
from clipsam.export.sam2_model import build_sam2_model

TINY = "sam2.1-hiera-tiny"
TINY_CFG = "configs/sam2.1/sam2.1_hiera_t.yaml"


@pytest.fixture(scope="module")
def tiny():
    return build_sam2_model(TINY, random_weights=True, seed=0)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_random_mode_is_sam2s_own_seeded_build(tiny):
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    expected = build_sam2(TINY_CFG, None, device="cpu")
    _assert_same_weights(tiny.module, expected)
    assert tiny.random_weights is True
    assert tiny.weights_id == "random-init:sam2.1-hiera-tiny:seed=0"
    assert tiny.name == TINY and tiny.spec.arch == TINY_CFG


def test_random_mode_depends_on_seed(tiny):
    other = build_sam2_model(TINY, random_weights=True, seed=1)
    key = "image_encoder.trunk.patch_embed.proj.weight"
    assert not torch.equal(tiny.module.state_dict()[key], other.module.state_dict()[key])
    assert other.weights_id.endswith("seed=1")


def test_model_is_eval_cpu_float32(tiny):
    assert not tiny.module.training
    params = list(tiny.module.parameters())
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)


def test_checkpoint_round_trip(tiny, tmp_path):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    # The official files wrap the state dict under "model".
    torch.save({"model": tiny.module.state_dict()}, path)
    loaded = build_sam2_model(TINY, path)
    _assert_same_weights(loaded.module, tiny.module)
    assert loaded.random_weights is False
    assert loaded.weights_id == file_sha256(path)
    assert not loaded.module.training


def test_larger_checkpoint_with_tiny_config_fails(tmp_path):
    small = build_sam2_model("sam2.1-hiera-small", random_weights=True, seed=0)
    path = tmp_path / "sam2.1_hiera_small.pt"
    torch.save({"model": small.module.state_dict()}, path)
    del small
    with pytest.raises(CheckpointError) as info:
        build_sam2_model(TINY, path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and TINY_CFG in message and TINY in message


def test_corrupt_checkpoint_fails(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"PK\x03\x04 this is not a torch file" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        build_sam2_model(TINY, path)


def test_non_sam2_state_dict_fails(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(768, 512), "logit_scale": torch.ones(())}, path)
    with pytest.raises(CheckpointError, match="does not match architecture"):
        build_sam2_model(TINY, path)


def test_missing_checkpoint_fails(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        build_sam2_model(TINY, tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="random_weights"):
        build_sam2_model(TINY)


def test_unknown_or_non_sam2_name_fails():
    with pytest.raises(ClipsamError, match="sam2.1-hiera-tiny"):
        build_sam2_model("sam3-huge", random_weights=True)
    with pytest.raises(ClipsamError, match="unknown model"):
        build_sam2_model("sclip-vit-b16", random_weights=True)


def test_importing_clipsam_does_not_import_sam2():
    code = (
        "import sys, clipsam.export.sam2_model, clipsam.reference.sam2_predictor; "
        "sys.exit(1 if 'sam2' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
