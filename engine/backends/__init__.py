"""Backends: one protocol, a pure PyTorch reference and exported-artifact runtimes."""
