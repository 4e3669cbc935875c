"""Export to ONNX, TorchScript and TensorRT, and runtimes that run any exported format."""
