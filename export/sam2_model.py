"""Building a SAM2 model from the registry: from a checkpoint file, or randomly initialised with a seed.

The `sam2` package initialises Hydra when it is imported, so it is imported inside the functions here and
never at clipsam import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from clipsam.engine.errors import CheckpointError
from clipsam.export.checkpoints import check_keys_and_shapes, file_sha256, load_checkpoint
from clipsam.export.registry import MODELS, ModelSpec, get_model


@dataclass(frozen=True)
class Sam2Model:
    """A SAM2 model ready for inference: eval mode, CPU, float32.

    module: the `sam2.modeling.sam2_base.SAM2Base` instance.
    spec: its registry entry (spec.arch is the sam2 hydra config path).
    weights_id: sha256 of the checkpoint file, or "random-init:<name>:seed=N" for random weights.
    random_weights: True when no checkpoint was loaded; every output built on this model must say so.
    """

    module: torch.nn.Module
    spec: ModelSpec
    weights_id: str
    random_weights: bool

    @property
    def name(self) -> str:
        return self.spec.name


def build_sam2_model(
    name: str = "sam2.1-hiera-tiny",
    checkpoint: Path | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
) -> Sam2Model:
    """Build the registry model `name` with its real architecture.

    random_weights=True: seed torch's global RNG with `seed` and keep sam2's own initialisation (no file
    read); the same (name, seed) always gives the same weights. Otherwise `checkpoint` is required: it is read
    with `torch.load(weights_only=True)` and must match the architecture key for key and shape for shape, else
    CheckpointError names the file and the architecture (a missing, empty or corrupt file is a CheckpointError
    too).
    """
    spec = get_model(name, "sam2")
    if random_weights:
        torch.manual_seed(seed)
        module = _instantiate(spec)
        return Sam2Model(module, spec, f"random-init:{spec.name}:seed={seed}", random_weights=True)
    if checkpoint is None:
        raise ValueError("build_sam2_model needs a checkpoint unless random_weights=True")
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint, "SAM2")
    module = _instantiate(spec)
    try:
        check_keys_and_shapes(state, module, checkpoint, f"{spec.name} ({spec.arch})")
    except CheckpointError as err:
        # Most mismatches are a checkpoint of another SAM2 size or version: say which names exist.
        names = ", ".join(n for n, s in MODELS.items() if s.family == "sam2")
        raise CheckpointError(f"{err}; pick the SAM2 model the file was made for ({names})") from err
    module.load_state_dict(state, strict=True)
    return Sam2Model(module, spec, file_sha256(checkpoint), random_weights=False)


def _instantiate(spec: ModelSpec) -> torch.nn.Module:
    """The sam2 architecture of `spec`, with sam2's default initialisation, in eval mode on the CPU."""
    # Imported here: `import sam2` initialises Hydra's global state.
    from sam2.build_sam import build_sam2

    module = build_sam2(spec.arch, ckpt_path=None, device="cpu", mode="eval")
    return module.float().eval()
