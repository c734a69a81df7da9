"""Test certificates made on the spot with sockhop's own local CA (cryptography): leaves it signs, or expired ones."""

from __future__ import annotations

from pathlib import Path

from sockhop.localca import CertificateAuthority, KeyPair


class LocalCA:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.authority = CertificateAuthority.create("sockhop test CA")
        self.authority.save(KeyPair(folder / "ca.pem", folder / "ca.key"))
        self.pem = folder / "ca.pem"

    def issue(self, stem: str, names: list[str], *, expired: bool = False) -> KeyPair:
        return self.authority.issue(names, KeyPair(self.folder / f"{stem}.pem", self.folder / f"{stem}.key"),
                                    expired=expired)  # fmt: skip


Issued = KeyPair
