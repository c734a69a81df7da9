"""The HTML listing of a directory that has no index.html: name, size, modified -- folders first."""

from __future__ import annotations

import html
import os
import stat
import time
from urllib.parse import quote

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{padding:.2em 1em;text-align:left}td.size{text-align:right}"
)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def render_listing(directory: str, url_path: str, *, dotfiles: bool) -> bytes:
    """The listing page of ``directory`` (a filesystem path) shown at ``url_path`` (ends with "/")."""
    rows: list[tuple[bool, str, str, str]] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        entries = []
    for entry in entries:
        if entry.name.startswith(".") and not dotfiles:
            continue
        try:
            info = entry.stat()
        except OSError:
            continue
        is_dir = stat.S_ISDIR(info.st_mode)
        modified = time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.st_mtime))
        rows.append((not is_dir, entry.name, "-" if is_dir else human_size(info.st_size), modified))
    rows.sort(key=lambda row: (row[0], row[1].lower()))
    title = html.escape(f"Index of {url_path}")
    lines = [
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head>\n<body><h1>{title}</h1>\n<table>\n"
        "<tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>\n"
    ]
    if url_path != "/":
        lines.append('<tr><td><a href="../">../</a></td><td class="size">-</td><td></td></tr>\n')
    for is_file, name, size, modified in rows:
        shown = name if is_file else name + "/"
        href = quote(name) + ("" if is_file else "/")
        lines.append(
            f'<tr><td><a href="{html.escape(href)}">{html.escape(shown)}</a></td>'
            f'<td class="size">{size}</td><td>{modified}</td></tr>\n'
        )
    lines.append("</table>\n</body></html>\n")
    return "".join(lines).encode("utf-8")
