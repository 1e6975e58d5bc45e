"""Tongban (通办): a certificate mutual-recognition gateway for cross-region government services."""

__version__ = "0.1.0"
