"""The builder: from a Network to an Engine."""

from .builder import Builder, build
from .config import BuilderConfig, parse_shapes

__all__ = ["Builder", "BuilderConfig", "build", "parse_shapes"]
