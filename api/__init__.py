"""Quarry: chat with your data, safely."""

__version__ = "0.1.0"
