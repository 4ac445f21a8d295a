"""Importing clipsam.kernels compiles nothing; warmup() compiles or loads every kernel."""

import subprocess
import sys

import clipsam.kernels


def test_import_compiles_nothing_and_loads_no_kernel_module():
    code = (
        "import sys, clipsam.kernels\n"
        "assert not [m for m in sys.modules if m.startswith('clipsam.kernels.')], sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_warmup_reports_seconds_for_every_kernel_group():
    seconds = clipsam.kernels.warmup()
    assert {
        "components[uint8]",
        "components[int16]",
        "components[int32]",
        "rle.encode[c-order]",
        "rle.iou",
    } <= set(seconds)
    assert all(isinstance(v, float) and v >= 0 for v in seconds.values())
    again = clipsam.kernels.warmup()
    assert sum(again.values()) < 2.0  # everything compiled: a second warmup only runs tiny inputs
