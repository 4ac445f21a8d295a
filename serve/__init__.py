"""`clipsam serve`: the pipeline's stages as a Ray Serve application (HTTP ingress, SCLIP stage, SAM2 encoder,
SAM2 decoder with cross-request batching). Importing this package imports Ray only on use."""
