"""Build time: model registry, checkpoint download and loading, model builders, ONNX export."""
