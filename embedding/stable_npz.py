"""Small model files the project trains and ships, written so that the same arrays give the same
bytes (fixed zip dates): a retrained file can be compared with the shipped one with `cmp`."""
from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def save_stable(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz of `arrays` (no pickles), written whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                             buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    temporary.replace(path)


__all__ = ["save_stable"]
