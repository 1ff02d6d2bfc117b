"""Content digests of files, read in chunks so memory stays flat whatever the file's size."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: str | Path, algorithm: str = "sha1") -> str:
    """Hex digest of a file. The index keys each product's image by SHA-1 (changing it would
    make every stored product look changed and be embedded again); weights files are named
    by SHA-256."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()
