"""Tuning back-end plugin (being written)."""
from studio.hookspecs import hookimpl


@hookimpl
def register_backends(register):
    pass
