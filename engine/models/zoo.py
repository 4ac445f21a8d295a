"""The model zoo: every model clipsam can build, its architecture, where its weights live and where a
downloaded checkpoint is looked for. Torch-free, so the runtime and the CLI read it without the export code.

A zoo entry never downloads anything; `clipsam download NAME` (export/download.py) does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from clipsam.engine.errors import ClipsamError

_SAM21_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/{}.pt"
_SAM20_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/{}.pt"


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model.

    family: "sclip" or "sam2".
    arch: the architecture name (open_clip model name, or the sam2 package's hydra config path).
    url: where `clipsam download` fetches the checkpoint.
    filename: the checkpoint's file name inside the checkpoints folder.
    sha256: expected digest, or None where no digest is published (the download prints the one it got).
    """

    name: str
    family: str
    arch: str
    url: str
    filename: str
    sha256: str | None = None
    params_m: float | None = None


def _sclip() -> ModelSpec:
    digest = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
    return ModelSpec(
        name="sclip-vit-b16",
        family="sclip",
        arch="ViT-B-16",
        url=f"https://openaipublic.azureedge.net/clip/models/{digest}/ViT-B-16.pt",
        filename="ViT-B-16.pt",
        sha256=digest,
        params_m=149.6,
    )


def _sam2(version: str, size: str, cfg_size: str, params_m: float) -> ModelSpec:
    if version == "2.1":
        stem = f"sam2.1_hiera_{size}"
        return ModelSpec(
            name=f"sam2.1-hiera-{size.replace('_', '-')}",
            family="sam2",
            arch=f"configs/sam2.1/sam2.1_hiera_{cfg_size}.yaml",
            url=_SAM21_URL.format(stem),
            filename=f"{stem}.pt",
            params_m=params_m,
        )
    stem = f"sam2_hiera_{size}"
    return ModelSpec(
        name=f"sam2-hiera-{size.replace('_', '-')}",
        family="sam2",
        arch=f"configs/sam2/sam2_hiera_{cfg_size}.yaml",
        url=_SAM20_URL.format(stem),
        filename=f"{stem}.pt",
        params_m=params_m,
    )


_SAM2_SIZES = (("tiny", "t", 38.9), ("small", "s", 46.0), ("base_plus", "b+", 80.8), ("large", "l", 224.4))

MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in [_sclip()]
        + [_sam2(v, size, cfg, params) for v in ("2.1", "2.0") for size, cfg, params in _SAM2_SIZES]
    }
)

from clipsam.engine.models.choice import DEFAULT_CLIP, DEFAULT_SAM  # noqa: E402,F401  (one definition)


def get_model(name: str, family: str | None = None) -> ModelSpec:
    """Look a model up by name; an unknown name lists the valid ones."""
    spec = MODELS.get(name)
    if spec is None or (family is not None and spec.family != family):
        valid = ", ".join(n for n, s in MODELS.items() if family is None or s.family == family)
        raise ClipsamError(f"unknown model '{name}'; choose one of: {valid}")
    return spec


def default_checkpoint_dir() -> Path:
    """Where checkpoints live: $CLIPSAM_CHECKPOINT_DIR, else ./checkpoints."""
    return Path(os.environ.get("CLIPSAM_CHECKPOINT_DIR", "checkpoints"))


def checkpoint_path(spec: ModelSpec, directory: Path | None = None) -> Path:
    """The file a downloaded checkpoint of `spec` has in `directory` (default: the checkpoints folder)."""
    return (directory or default_checkpoint_dir()) / spec.filename
