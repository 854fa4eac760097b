"""Convert the float32 table to the stored dtype."""

from __future__ import annotations

import numpy as np

DTYPES = ("float32", "float16", "int8")


def to_stored_dtype(table: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the stored table and, for int8, the per-row scales that decode it.

    int8 rows are scaled symmetrically by their own largest magnitude, so every row keeps
    7 bits of precision whatever its norm; ``row * scale`` gives back the float row.
    """
    if dtype == "float32":
        return table.astype(np.float32), None
    if dtype == "float16":
        return table.astype(np.float16), None
    if dtype == "int8":
        peak = np.abs(table).max(axis=1)
        scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        quantized = np.clip(np.rint(table / scales[:, None]), -127, 127).astype(np.int8)
        return quantized, scales
    raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
