"""The built-in site ``sockhop up`` serves on port 8080: what sockhop is, the six models, how to try each service."""

from __future__ import annotations

from pathlib import Path


def site_root() -> Path:
    """The folder of the built-in site (installed with the package)."""
    return Path(__file__).resolve().parent / "files"
