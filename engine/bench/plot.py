"""`clipsam bench --plot`: per-stage latency breakdown, one stacked bar per pipeline (ours vs reference)."""

from __future__ import annotations

from pathlib import Path

from clipsam.engine.errors import ClipsamError

_NOT_STACKED = ("total",)


def require_matplotlib() -> None:
    """Fail in one line, before anything is measured, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ClipsamError("--plot needs matplotlib: pip install matplotlib") from err


def plot_stages(record: dict, path: Path | str) -> Path:
    """Write a PNG: for "ours" and (if measured) "reference", the p50 of each stage stacked into one bar,
    its height the sum of the stage medians (ms), labelled with the end-to-end p50 and the speedup."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    from matplotlib import pyplot as plt

    sides = [side for side in ("ours", "reference") if record.get(side)]
    stages = [s for s in record["ours"]["stages"] if s not in _NOT_STACKED]
    labels = [f"{side}\n{record[side]['backend']} {record[side]['precision']}" for side in sides]
    figure, axes = plt.subplots(figsize=(3.0 + 2.0 * len(sides), 5.0))
    bottoms = [0.0] * len(sides)
    for stage in stages:
        heights = [record[side]["stages"].get(stage, {}).get("p50", 0.0) for side in sides]
        axes.bar(labels, heights, bottom=bottoms, label=stage, width=0.6)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for x, side in enumerate(sides):
        total = record[side]["stages"]["total"]["p50"]
        axes.annotate(f"{total:.0f} ms", (x, bottoms[x]), ha="center", va="bottom")
    axes.set_ylabel("p50 latency per image (ms)")
    axes.set_title(_title(record), fontsize=9)
    axes.legend(title="stage", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def _title(record: dict) -> str:
    config, models = record["config"], record["ours"]["models"]
    title = f"{config['stage']}: {models['clip']['name']} + {models['sam2']['name']}, {config['images']}"
    speedup = (record.get("speedup") or {}).get("total")
    if speedup:
        title += f"\nspeedup ×{speedup:.2f} over the reference (p50)"
    if record["ours"]["random_weights"]:
        title += " [random weights]"
    return title
