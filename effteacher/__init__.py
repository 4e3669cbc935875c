"""effteacher: semi-supervised object detection (Efficient Teacher) with a YOLO-style CLI."""

from effteacher.version import __version__

__all__ = ["Detector", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import effteacher` does no work (no torch import) at import time.
    if name == "Detector":
        from effteacher.predict.predictor import Detector

        return Detector
    raise AttributeError(name)
