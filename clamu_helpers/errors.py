"""Every error the kit raises on bad input: specific, and named for what went wrong.

All derive from :class:`ClamuError` (a ``ValueError``), so callers can catch one type.
"""


class ClamuError(ValueError):
    """Base class of the kit's errors."""


class ExactnessError(ClamuError):
    """A vector would break the bit-exact promise (e.g. a retrained τ_u whose hash differs)."""


class DuplicateTaskError(ClamuError):
    """A task id is already merged (or repeated within one request)."""


class UnknownTaskError(ClamuError):
    """A task id that is not (or no longer) part of the merge."""


class ShapeMismatchError(ClamuError):
    """A vector or model whose parameter spec differs from the one expected."""


class NonFiniteError(ClamuError):
    """A task vector holding NaN or inf."""


class MissingResourceError(ClamuError, FileNotFoundError):
    """Weights or data that are not on this machine; the message says what to get where."""


class DeviceError(ClamuError):
    """A device that does not exist here, or CUDA set up so that results would not be exact."""


class UnknownNameError(ClamuError):
    """A method, setting, profile or reproduction target that does not exist; the message lists
    the ones that do."""


class ParameterError(ClamuError, TypeError):
    """A method parameter that does not exist or a value it does not accept (also a
    ``TypeError``, as Python raises for an unknown keyword)."""


class StateError(ClamuError):
    """A saved state that is corrupt, truncated, or from an incompatible environment."""
