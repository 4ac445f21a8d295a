"""The runtime. Importing it must not import torch (the onnxruntime path runs without torch)."""
