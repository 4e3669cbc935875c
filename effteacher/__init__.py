"""effteacher: semi-supervised object detection (Efficient Teacher) with a YOLO-style CLI."""

__version__ = "0.1.0"

__all__ = ["Detector", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import effteacher` does no work (no torch import) at import time.
    if name == "Detector":
        from effteacher.engine.predictor import Detector

        return Detector
    raise AttributeError(name)
