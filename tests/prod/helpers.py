"""Shared pieces of the production tests: small sites that say which instance answered, plain HTTP fetches."""

from __future__ import annotations

import http.client
from pathlib import Path


def site_saying(root: Path, name: str) -> Path:
    """A one-file site whose /who.txt names the instance serving it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "who.txt").write_text(name)
    return root


def fetch(host: str, port: int, path: str = "/who.txt", timeout: float = 10.0, headers=None) -> tuple[int, bytes]:
    """One GET on a fresh connection (a new source port each time, so SO_REUSEPORT can spread them)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
