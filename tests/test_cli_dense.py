"""`clipsam dense` on the golden image, checkpoint and settings writes the official SCLIP outputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.cli_helpers import run_cli

GOLDEN_CLASS_LINES = ["background, wall, floor", "cat", "bicycle, bike", "tree"]
SETTINGS = {
    "a": ["--logit-scale", "40", "--prob-thd", "0"],
    "b": ["--logit-scale", "65", "--prob-thd", "0.1", "--area-thd", "0.1"],
}


@pytest.mark.parametrize("setting", ["a", "b"])
def test_dense_cli_writes_golden_probs_and_pred(golden_dir, tiny_clip_checkpoint, tmp_path, capsys, setting):
    golden = np.load(golden_dir / "sclip_golden_outputs.npz")
    image = tmp_path / "golden.png"
    Image.fromarray(golden["image_u8"]).save(image)
    class_file = tmp_path / "classes.txt"
    class_file.write_text("\n".join(GOLDEN_CLASS_LINES) + "\n")
    out = tmp_path / "dense.npz"
    args = ["dense", "--image", image, "--class-file", class_file, "--clip-checkpoint", tiny_clip_checkpoint]
    code, _, err = run_cli([*args, "--short-side", "0", *SETTINGS[setting], "--out", out], capsys)
    assert code == 0, err
    written = np.load(out)
    assert written["probs"].shape == (4, 260, 350) and written["probs"].dtype == np.float32
    np.testing.assert_allclose(written["probs"], golden[f"probs_{setting}"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(written["pred"], golden[f"pred_{setting}"][0])
    assert bool(written["random_weights"]) is False
    assert list(written["class_names"]) == ["background", "cat", "bicycle", "tree"]
