"""The ``spyglass`` command (``cli.parser.main``), above ``indexer`` and ``app``."""

from cli.parser import main

__all__ = ["main"]
