"""Typed errors that users can cause; the CLI prints them in one line without a traceback."""


class EffTeacherError(Exception):
    """Base class: a problem the user can fix. The message says what is wrong and what to do."""


class DatasetError(EffTeacherError):
    """The dataset YAML, an image, a label file or a split is unusable."""


class ConfigError(EffTeacherError):
    """A command-line option or config key is invalid."""


class CheckpointError(EffTeacherError):
    """A weights file is missing, truncated or not an effteacher checkpoint."""


class ExportError(EffTeacherError):
    """An export cannot be produced or does not match PyTorch."""


class DeviceError(EffTeacherError):
    """The requested device is not available."""


class RunFolderBusyError(EffTeacherError):
    """Another run (a live process) holds the run folder this command asked for."""
