"""Test helper: damage an MRC file's header field by field (shared by the reader tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def set_header(path: Path, **fields) -> None:
    """Write ``fields`` into an MRC file's header (numpy, with mrcfile's header layout)."""
    from mrcfile.dtypes import HEADER_DTYPE

    raw = bytearray(path.read_bytes())
    header = np.frombuffer(bytes(raw[:1024]), dtype=HEADER_DTYPE).copy()
    for name, value in fields.items():
        header[name] = value
    raw[:1024] = header.tobytes()
    path.write_bytes(bytes(raw))
