"""Helpers shared by the benchmark modules (not a test file)."""

from __future__ import annotations

import pytest


def benchmarks_enabled(config: pytest.Config) -> bool:
    """pytest-benchmark's own rule (its session is not reachable from a fixture)."""
    return not (config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"))
