"""Per-layer profiles as pandas DataFrames, and exports (CSV, Chrome trace)."""

from .profile import profile_context, to_chrome_trace

__all__ = ["profile_context", "to_chrome_trace"]
