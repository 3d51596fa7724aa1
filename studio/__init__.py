"""Alignment and dataset studio."""
__version__ = "0.1.0"
