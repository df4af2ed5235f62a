"""Typed errors. Library code raises these; only the command line turns them into exit code 2."""


class WeightstepError(Exception):
    """Base class: a problem the user can fix, reported as one line."""


class InputError(WeightstepError):
    """A video or file that cannot be read as asked (missing, wrong size, zero frames...)."""


class ConfigError(WeightstepError):
    """An unknown codec, an unknown parameter, or a value out of range."""


class BitstreamError(WeightstepError):
    """A file that is not a valid bitstream: foreign, truncated, corrupted or out of bounds."""


class UnavailableError(WeightstepError):
    """Something this machine cannot do (a missing optional package, checkpoint or device)."""


class MetricError(WeightstepError):
    """A measurement that cannot be made honestly (e.g. BD-rate on curves that do not overlap)."""
