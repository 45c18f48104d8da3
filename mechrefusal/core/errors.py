"""Exceptions raised by mechrefusal: each carries one sentence saying what was tried and what to do.

Every deliberate raise in the package uses one of these (``except MechrefusalError`` catches them all);
those about bad arguments also derive from the builtin a caller would expect (``ValueError``,
``TypeError``, ``FileNotFoundError``). ``docs/errors.md`` lists each with its usual cause and fix.
"""


class MechrefusalError(Exception):
    """Base class for every error mechrefusal raises on purpose."""


class FetchError(MechrefusalError):
    """A pinned file could not be fetched from the package registry or failed its hash check."""


class EndpointError(MechrefusalError):
    """A chat-model endpoint did not answer, refused the request or answered with something unusable."""


class ModelLoadError(MechrefusalError):
    """A model spec could not be resolved or loaded."""


class DataError(MechrefusalError):
    """An instruction set or a direction file is unknown, malformed or empty."""


class MissingFileError(MechrefusalError, FileNotFoundError):
    """A file or directory that was passed does not exist (also a ``FileNotFoundError``)."""


class SettingError(MechrefusalError, ValueError):
    """A setting or argument has a value the toolkit cannot use (also a ``ValueError``)."""


class ArgumentTypeError(SettingError, TypeError):
    """An argument has a type the toolkit cannot use (also a ``TypeError``)."""


class DeviceError(SettingError):
    """A device was asked for that this machine does not have, or a model does not fit on it."""


class CheckpointError(MechrefusalError):
    """A checkpoint or a training run's output directory cannot be written, resumed or started from as asked."""
