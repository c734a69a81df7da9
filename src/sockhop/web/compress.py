"""Compression on the fly (``--compress``, nginx's ``gzip on``): text files the client accepts compressed, gzip or
brotli (where the ``brotli`` package is installed), each file version compressed once and kept.

A precompressed sibling (``file.gz``, ``file.br``) is still preferred: it costs nothing per request. Compressed bytes
are kept under the file's identity (mtime, inode, size, ctime) and the coding, so a hot file is compressed once and
a changed one again; the store is bounded in bytes and starts over when full. Ranges are always of the file itself
(never of compressed bytes, whose offsets mean nothing to a client resuming a download).
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field

try:  # optional: `pip install brotli`
    import brotli as _brotli
except ImportError:  # pragma: no cover - depends on the machine
    _brotli = None

#: Codings this server can make, best first.
CODINGS: tuple[str, ...] = ("br", "gzip") if _brotli is not None else ("gzip",)

#: Files larger than this are sent as they are (compressing them would hold them whole in memory).
MAX_SIZE = 8 * 1024 * 1024

#: Bytes of compressed files kept per process.
STORE_BYTES = 64 * 1024 * 1024


@dataclass
class Compressor:
    """Compresses text files for clients that accept it, and keeps what it made."""

    min_size: int = 256  # smaller answers gain too little to be worth a Vary
    level: int = 6  # gzip's level (1-9); brotli's quality follows it
    store: dict[tuple, bytes] = field(default_factory=dict, repr=False)
    stored: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def applies(self, kind: str, size: int) -> bool:
        """Whether a file of this type and size is compressed for a client that accepts it (and so Varies)."""
        return self.min_size <= size <= MAX_SIZE and kind.startswith(_COMPRESSIBLE)

    def coding(self, accepted: set[str]) -> str | None:
        """The best coding the client accepts, or None."""
        for coding in CODINGS:
            if coding in accepted:
                return coding
        return None

    def compressed(self, path: str, identity: tuple, coding: str, data: bytes) -> bytes:
        """``data`` (the file at ``path`` as ``identity`` describes it) in ``coding``, made once per file version."""
        key = (path, identity, coding)
        found = self.store.get(key)
        if found is not None:
            return found
        if coding == "br":
            assert _brotli is not None
            made = _brotli.compress(data, quality=min(11, self.level), mode=_brotli.MODE_TEXT)
        else:
            made = gzip.compress(data, compresslevel=self.level, mtime=0)
        with self.lock:
            if self.stored + len(made) > STORE_BYTES:
                self.store.clear()
                self.stored = 0
            self.store[key] = made
            self.stored += len(made)
        return made


#: Types worth compressing: text and its structured kin (images and archives are compressed already).
_COMPRESSIBLE = (
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "image/svg+xml",
    "application/manifest+json",
    "application/wasm",
)
