"""Pure PyTorch SCLIP: `SclipModel` with numpy in and out (a CropEncoder and a TextEncoder of
engine/stages.py), text features through the TextBank."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from clipsam.engine.text.bank import TextBank
from clipsam.export.clip_model import SclipModel


class TorchSclip:
    """The reference SCLIP network on CPU/GPU in float32.

    model: a loaded `SclipModel` (see `clipsam.export.clip_model.load_sclip`).
    text_bank: the text-feature cache; None = the default cache folder.
    """

    def __init__(self, model: SclipModel, text_bank: TextBank | None = None, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.text_bank = text_bank if text_bank is not None else TextBank()
        self._lock = threading.Lock()  # the tokenizer is built lazily on first use

    @property
    def patch_size(self) -> int:
        return self.model.patch_size

    @property
    def weights_id(self) -> str:
        return self.model.weights_id

    @property
    def random_weights(self) -> bool:
        return self.model.random_weights

    def encode_crops(self, crops: np.ndarray) -> np.ndarray:
        """float32 [N, 3, h, w] CLIP-normalised -> [N, (h//p)·(w//p), D] L2-normalised patch features."""
        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)).to(self.device)
            return self.model.encode_crops(batch).float().cpu().numpy()

    def encode_crops_with_regions(self, crops: np.ndarray, patch_regions: np.ndarray) -> np.ndarray:
        """`encode_crops` with the last block restricted to regions: patch_regions int32 [N, L] (issue 26)."""
        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)).to(self.device)
            ids = torch.from_numpy(np.ascontiguousarray(patch_regions, dtype=np.int32)).to(self.device)
            return self.model.encode_crops_with_regions(batch, ids).float().cpu().numpy()

    def encode(self, queries: Sequence[str]) -> np.ndarray:
        """Q query words -> float32 [Q, D] template-ensembled text features, cached on disk."""
        return self.text_bank.get(self.weights_id, list(queries), self._encode_uncached)

    def _encode_uncached(self, queries: list[str]) -> np.ndarray:
        with self._lock, torch.inference_mode():
            features = self.model.encode_queries(queries, templates=self.text_bank.templates)
        return features.float().cpu().numpy()
