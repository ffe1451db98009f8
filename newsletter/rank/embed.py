"""Text embedders and the vector cache seam the store can implement to persist vectors.

Vectors are L2-normalised float32 rows. A cache is keyed by (model name, key): a paper's key for
papers, the text itself for profile queries, so a paper is embedded once and a profile once per change.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from newsletter.rank.text import tokens

log = logging.getLogger(__name__)


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed size."""

    name: str  # identifies the model in the cache; change it when vectors change
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class VectorCache(Protocol):
    """Where vectors live between runs (the store implements this to persist them)."""

    def get(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]: ...

    def put(self, model: str, vectors: Mapping[str, np.ndarray]) -> None: ...

    def delete(self, keys: Mapping[str, Sequence[str]]) -> int: ...


class MemoryVectorCache:
    """A process-local cache: the default, and what tests use."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], np.ndarray] = {}

    def get(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        return {k: self._data[(model, k)] for k in keys if (model, k) in self._data}

    def put(self, model: str, vectors: Mapping[str, np.ndarray]) -> None:
        for key, vector in vectors.items():
            self._data[(model, key)] = np.asarray(vector, dtype=np.float32)

    def delete(self, keys: Mapping[str, Sequence[str]]) -> int:
        return sum(self._data.pop((model, k), None) is not None for model, ks in keys.items() for k in ks)

    def __len__(self) -> int:
        return len(self._data)


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


class HashingEmbedder:
    """A tiny deterministic bag-of-words embedder: the in-package fake for tests (no model needed).
    1,024 buckets, so two words of a small test corpus seldom share one."""

    name = "hashing-bow"

    def __init__(self, dim: int = 1024) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for token in tokens(text):
                digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
                out[i, int.from_bytes(digest[:4], "little") % self.dim] += 1.0
        out[:, 0] += 1e-3  # no zero rows: an empty text is equally far from everything
        return normalise_rows(out)
