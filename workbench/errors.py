"""The errors workbench raises for things a user can fix.

Every class here derives from :class:`WorkbenchError`; the CLI turns any of them into one line on
stderr and exit status 2. Anything else escaping is an internal bug and may show a traceback.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base of all user-facing errors."""


class ModelLoadError(WorkbenchError, ValueError):
    """A model file could not be read, parsed or validated."""


class ExternalDataError(ModelLoadError):
    """External tensor data is unsafe or inconsistent (path escape, symlink, bad offset/length)."""


class UnsupportedModelError(WorkbenchError, ValueError):
    """The model uses an operator, domain or opset that workbench does not support."""


class ShapeError(WorkbenchError, ValueError):
    """Shapes given by the user are malformed, or inconsistent with the model."""


class InputError(WorkbenchError, ValueError):
    """A feed given to an engine does not match its inputs (name, dtype, rank, dims)."""


class InputTypeError(InputError, TypeError):
    """A feed has the wrong element type or array kind."""


class EngineFormatError(WorkbenchError, ValueError):
    """An engine file is corrupt, truncated, malformed or from an incompatible build."""


class EngineCompatibilityError(EngineFormatError):
    """An engine was built for another format version, backend, GPU architecture or library."""


class BuildError(WorkbenchError, RuntimeError):
    """The builder could not produce an engine for the requested configuration."""


class ResourceLimitError(WorkbenchError, ValueError):
    """An operation would exceed a configured size limit (elements, bytes, nesting)."""


class OutOfMemoryError(WorkbenchError, MemoryError):
    """The GPU ran out of memory while building, loading or running; the context stays usable."""


class ModelTooLargeError(ModelLoadError, ResourceLimitError):
    """A model exceeds a configured limit; catchable as either a load error or a limit error."""
