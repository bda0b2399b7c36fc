"""Identities the ledger and the steps compute alike: the 64-bit hash of a source's file or
object (messages.unit) and 128-bit message keys as one sortable value. Pure functions over
numpy/Arrow arrays; no database."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa


def unit_hash(source: str, unit: str) -> int:
    """64-bit identity of a source's file or object, as messages.unit stores it."""
    import pyarrow as pa

    return int(unit_hashes(source, pa.array([unit], pa.string()))[0])


def unit_hashes(source: str, files: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """unit_hash of every row's source_file (hashed once per distinct file)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(files)
    if isinstance(enc, pa.ChunkedArray):
        enc = (
            enc.unify_dictionaries().combine_chunks()
            if enc.num_chunks
            else pa.array([], pa.dictionary(pa.int32(), pa.string()))
        )
    names = np.array([f"{source}\x1f{f}" for f in enc.dictionary.to_pylist()], dtype=object)
    per_file = pd.util.hash_array(names, categorize=False).view(np.int64)
    idx = enc.indices.to_numpy(zero_copy_only=False)
    return per_file[idx] if len(per_file) else np.empty(len(idx), dtype=np.int64)


PAIR = np.dtype([("lo", np.int64), ("hi", np.int64)])  # a 128-bit message key as one sortable value


def pairs(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    out = np.empty(len(lo), dtype=PAIR)
    out["lo"], out["hi"] = lo, hi
    return out
