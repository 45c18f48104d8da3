"""Exceptions raised by mechrefusal: each carries one sentence saying what was tried and what to do."""


class MechrefusalError(Exception):
    """Base class for every error mechrefusal raises on purpose."""


class FetchError(MechrefusalError):
    """A pinned file could not be fetched from the package registry or failed its hash check."""


class ModelLoadError(MechrefusalError):
    """A model spec could not be resolved or loaded."""


class DataError(MechrefusalError):
    """An instruction set is unknown, malformed or empty."""


class SettingError(MechrefusalError, ValueError):
    """A setting or argument has a value the toolkit cannot use (also a ``ValueError``)."""


class DeviceError(SettingError):
    """A device was asked for that this machine does not have, or a model does not fit on it."""
