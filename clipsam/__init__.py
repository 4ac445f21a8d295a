"""clipsam: SCLIP dense maps turned into SAM2 prompts, run as exported artifacts."""

__version__ = "0.1.0"
