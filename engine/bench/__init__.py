"""Latency measurement of pipelines, its JSON record and regression gate, and plots (`clipsam bench`)."""
