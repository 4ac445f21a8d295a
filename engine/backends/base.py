"""The Backend protocol: one exported graph behind named numpy inputs and outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, shape (ints, or strings for symbolic dims), numpy dtype name."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str


class Backend(Protocol):
    """A runnable graph (onnxruntime session, TensorRT engine, …)."""

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on named inputs; returns every output by name."""


class GraphSpecs:
    """input_specs / output_specs of a Backend implementation that keeps them in `_inputs` / `_outputs`."""

    _inputs: tuple[TensorSpec, ...]
    _outputs: tuple[TensorSpec, ...]

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self._outputs
