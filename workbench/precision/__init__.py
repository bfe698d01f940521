"""Precision assignment: which precision each layer runs at, and the casts at the boundaries."""

from .assign import LOWERABLE, assign_precisions, requested_precision

__all__ = ["LOWERABLE", "assign_precisions", "requested_precision"]
