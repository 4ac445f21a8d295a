"""The pure PyTorch reference pipeline (SCLIP in torch, SAM2 through the `sam2` package, one call per prompt).

Build- and test-time code: the runtime (clipsam.engine) reaches it only through the backend registry."""
