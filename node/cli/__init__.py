"""The ``pasar`` command (console script ``node.cli:main``)."""

from .main import main

__all__ = ["main"]
