"""The regression gate of `clipsam bench` on fixed records (no timing): speedup and latency gates, the
tiny-stage rule (MIN_GATED_MS), comparability warnings, and the CLI's exit codes on fixed measurements."""

from __future__ import annotations

import pytest

from clipsam.engine.bench import measure as bench
from clipsam.engine.bench import record as bench_record
from clipsam.engine.errors import ClipsamError
from tests.cli_helpers import run_cli
from tests.test_bench import _with_total, fake_pipeline, fake_record


def test_regression_gate_on_speedups():
    baseline = fake_record({"sclip": 10.0, "total": 20.0}, {"sclip": 40.0, "total": 60.0})  # ×4, ×3
    within = fake_record({"sclip": 11.0, "total": 21.0}, {"sclip": 40.0, "total": 60.0})  # ×3.64: -9 %
    worse = fake_record({"sclip": 14.0, "total": 24.0}, {"sclip": 40.0, "total": 60.0})  # ×2.86: -29 %
    passed = bench_record.compare_to_baseline(within, baseline, 0.10)
    assert not passed.regressed and not passed.warnings
    assert {c.stage for c in passed.checks} == {"sclip", "total"}
    assert all(c.kind == "speedup" for c in passed.checks)
    failed = bench_record.compare_to_baseline(worse, baseline, 0.10)
    assert failed.regressed
    assert [c.stage for c in failed.checks if c.regressed] == ["sclip", "total"]
    assert failed.checks[0].change == pytest.approx((40 / 14) / 4 - 1)
    # A slower machine that slows both sides alike is no regression.
    slower = fake_record({"sclip": 20.0, "total": 40.0}, {"sclip": 80.0, "total": 120.0})
    assert not bench_record.compare_to_baseline(slower, baseline, 0.10).regressed


def test_baseline_from_another_machine_class_warns_and_compares_ratios_only():
    baseline = fake_record({"total": 20.0}, {"total": 60.0})
    baseline["machine"] = {**baseline["machine"], "cpu_model": "Some Other CPU", "usable_cores": 64}
    record = fake_record({"total": 5.0}, {"total": 14.0})  # 4× faster machine; speedup ×2.8 vs ×3
    report = bench_record.compare_to_baseline(record, baseline, 0.10)
    assert any("Some Other CPU" in w for w in report.warnings)
    assert [c.kind for c in report.checks] == ["speedup"] and not report.regressed
    no_ratio = fake_record({"total": 5.0}, None)
    with pytest.raises(ClipsamError, match="--compare-to torch"):
        bench_record.compare_to_baseline(no_ratio, baseline, 0.10)


def test_same_machine_without_reference_gates_latency():
    baseline = fake_record({"total": 20.0}, None)
    report = bench_record.compare_to_baseline(fake_record({"total": 23.0}, None), baseline, 0.10)
    assert report.regressed and report.checks[0].kind == "latency_ms"
    assert not bench_record.compare_to_baseline(fake_record({"total": 21.0}, None), baseline, 0.10).regressed


def test_tiny_stages_in_both_records_are_not_gated():
    tiny = bench_record.MIN_GATED_MS / 4
    baseline = fake_record({"merge": tiny, "sclip": 100.0}, None)
    record = fake_record({"merge": 3 * tiny, "sclip": 100.0}, None)  # merge 3× slower, still under the floor
    report = bench_record.compare_to_baseline(record, baseline, 0.10)
    assert report.not_gated == ("merge",) and not report.regressed
    assert {c.stage for c in report.checks} == {"sclip", "total"}
    assert report.to_json()["not_gated"] == ["merge"]
    assert report.to_json()["min_gated_ms"] == bench_record.MIN_GATED_MS


def test_a_stage_tiny_in_one_record_only_is_gated():
    floor = bench_record.MIN_GATED_MS
    grew = bench_record.compare_to_baseline(
        fake_record({"merge": 5 * floor}, None), fake_record({"merge": floor / 4}, None), 0.10
    )
    assert not grew.not_gated and grew.regressed
    assert [c.stage for c in grew.checks if c.regressed] == ["merge", "total"]
    shrank = bench_record.compare_to_baseline(
        fake_record({"merge": floor / 4}, None), fake_record({"merge": 5 * floor}, None), 0.10
    )
    assert not shrank.not_gated and not shrank.regressed and len(shrank.checks) == 2
    at_floor = fake_record({"merge": floor}, None)
    assert not bench_record.compare_to_baseline(at_floor, at_floor, 0.10).not_gated


def test_speedup_gate_skips_stages_whose_smaller_side_is_tiny_in_both_records():
    floor = bench_record.MIN_GATED_MS
    # Ours tiny against a slow reference: the ratio is ours' timer noise (×100 → ×60 here), not gated.
    baseline = fake_record({"prompts": floor / 10, "sclip": 10.0}, {"prompts": 10 * floor, "sclip": 40.0})
    noisy = fake_record({"prompts": floor / 6, "sclip": 10.0}, {"prompts": 10 * floor, "sclip": 40.0})
    report = bench_record.compare_to_baseline(noisy, baseline, 0.10)
    assert report.not_gated == ("prompts",) and not report.regressed
    # Ours grew past the floor: gated, and the speedup fell from ×100 to ×5.
    grown = fake_record({"prompts": 2 * floor, "sclip": 10.0}, {"prompts": 10 * floor, "sclip": 40.0})
    report = bench_record.compare_to_baseline(grown, baseline, 0.10)
    assert not report.not_gated
    assert [c.stage for c in report.checks if c.regressed] == ["prompts", "total"]


def test_gate_refuses_another_stage():
    baseline = fake_record({"total": 20.0}, {"total": 60.0})
    record = fake_record({"total": 20.0}, {"total": 60.0})
    record["config"] = {**record["config"], "stage": "decoder"}
    with pytest.raises(ClipsamError, match="--stage"):
        bench_record.compare_to_baseline(record, baseline, 0.10)


def _fixed_cli_gate(monkeypatch, capsys, tmp_path, baseline_ms: dict, current_ms: dict):
    """`clipsam bench --baseline` with the measurement replaced by fixed timings (fake pipeline, no models):
    the gate's exit code and printout, independent of machine speed."""
    from clipsam.cli import commands_bench

    baseline = tmp_path / "fixed-baseline.json"
    bench_record.write_record(baseline, fake_record(baseline_ms, None, runs=1))
    fixed = bench.Measurement({"ours": [_with_total(current_ms)]}, {"ours": None})
    monkeypatch.setattr(commands_bench, "_build", lambda specs: {"ours": fake_pipeline()})
    monkeypatch.setattr(commands_bench, "_measure", lambda pipelines, images, config: fixed)
    args = ["bench", "--random-weights", "--runs", "1", "--size", "48x64", "--baseline", baseline]
    return run_cli(args, capsys)


def test_cli_gate_exit_codes_on_fixed_timings(monkeypatch, capsys, tmp_path):
    from clipsam.cli import commands_bench

    baseline = {"sam2_decoder": 100.0, "merge": 0.5}
    code, stdout, err = _fixed_cli_gate(
        monkeypatch, capsys, tmp_path, baseline, {"sam2_decoder": 500.0, "merge": 1.5}
    )
    assert code == commands_bench.REGRESSION_EXIT == 1, err
    assert "REGRESSED" in stdout and "regression beyond 10%" in err
    assert "not gated (p50 under 2 ms in both records): merge" in stdout
    code, stdout, err = _fixed_cli_gate(
        monkeypatch, capsys, tmp_path, baseline, {"sam2_decoder": 100.0, "merge": 1.5}
    )
    assert code == 0, err
    assert "REGRESSED" not in stdout and "merge" in stdout.split("not gated", 1)[1]
