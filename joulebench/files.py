"""Run-directory files that may travel compressed: ``name`` or, committed to save space, ``name.gz``."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO

from joulebench.errors import JoulebenchError


def stored(path: Path) -> Path | None:
    """``path`` if it exists, else ``path.gz`` if that does, else None. Both at once is refused: which one
    holds the data cannot be told (an empty ``requests.jsonl`` beside its ``.gz`` would hide every record)."""
    path = Path(path)
    gz = path.with_name(path.name + ".gz")
    if path.exists() and gz.exists():
        raise JoulebenchError(f"{path} and {gz.name} both exist: keep the one that holds the data, remove the other")
    if path.exists():
        return path
    return gz if gz.exists() else None


def open_text(path: Path) -> IO[str]:
    """Open ``path`` (or its ``.gz``) for reading text; ``FileNotFoundError`` when neither exists."""
    found = stored(path)
    if found is None:
        raise FileNotFoundError(f"{path}: no such file (nor {Path(path).name}.gz)")
    if found.suffix == ".gz":
        return gzip.open(found, "rt", encoding="utf-8", newline="")
    return found.open(encoding="utf-8", newline="")
