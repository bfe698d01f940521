"""Frontends turn model files into a :class:`workbench.ir.Network`."""
