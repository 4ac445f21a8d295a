"""Benchmark datasets, their published evaluation protocol, and the eval modes (`clipsam eval`)."""
