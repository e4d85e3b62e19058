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


class StorageError(ClamuError, OSError):
    """A write that the disk refused (full, read-only, no permission); the message names the
    path, and whatever was there before is unchanged."""


def storage_error(path, error: BaseException, what: str = "a file") -> StorageError:
    """A :class:`StorageError` for ``error`` (an ``OSError``, or a library's wrapper of one)
    raised while writing ``what`` at ``path``."""
    import errno
    import os
    import re
    code = getattr(error, "errno", None)
    if not code:   # safetensors' Rust writer: "... (os error 28)"
        found = re.search(r"os error (\d+)", str(error))
        code = int(found.group(1)) if found else None
    reason = os.strerror(code) if code else str(error)
    hint = {errno.ENOSPC: "free space there or choose another folder",
            errno.EROFS: "the file system is read-only: choose a writable folder",
            errno.EACCES: "no permission: choose a folder you can write",
            errno.EDQUOT: "the disk quota is used up"}.get(code, "choose a writable folder with free space")
    return StorageError(f"cannot write {what} at {path}: {reason} ({hint}); what was there before is unchanged")


def is_storage_failure(error: BaseException) -> bool:
    """An ``OSError``, or safetensors' wrapper of one (its Rust writer reports the OS error in
    its message)."""
    if isinstance(error, OSError):
        return True
    text = str(error)
    return type(error).__name__ == "SafetensorError" and any(
        s in text for s in ("No space left", "Read-only file system", "Permission denied", "StorageFull",
                            "ReadOnlyFilesystem", "PermissionDenied", "os error"))


class StateError(ClamuError):
    """A saved state that is corrupt, truncated, or from an incompatible environment."""


class WorkerDiedError(RuntimeError):
    """A worker process ended without an answer (killed by the system, e.g. out of memory) on
    every try: the units it ran are named, nothing else is lost (finished units are kept)."""
