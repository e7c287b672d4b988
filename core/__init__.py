"""Maillage: a collaboration stack for French local authorities on Matrix."""

__version__ = "0.1.0"
