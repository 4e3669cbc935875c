"""The package version, in a module nothing else depends on."""

__version__ = "0.1.0"
