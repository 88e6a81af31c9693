"""Error types. Every bad input raises a JaxqcError subclass with a one-line message that names
the file (and line) and says what was expected; the CLI prints it and exits non-zero."""


class JaxqcError(Exception):
    """Base class of all errors jaxqc raises on purpose."""


class DataError(JaxqcError, ValueError):
    """Malformed, inconsistent or unphysical input data."""


class FormatError(DataError):
    """A file that is not in a format jaxqc reads (or not in the one it claims)."""


class WriteError(JaxqcError):
    """A file could not be written (disk full, permissions); the earlier file at that path is kept."""


class RunLocked(JaxqcError):
    """A run directory that another live jaxqc process is writing."""


class UnitError(JaxqcError, ValueError):
    """An unknown or unsupported unit string."""


class ElementError(DataError):
    """An unknown chemical element (symbol or atomic number)."""


def where(path, line=None) -> str:
    """'file:line: ' prefix for error messages."""
    if path is None:
        return ""
    return f"{path}:{line}: " if line is not None else f"{path}: "
