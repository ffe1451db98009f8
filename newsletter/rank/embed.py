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


class MemoryVectorCache:
    """A process-local cache: the default, and what tests use."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], np.ndarray] = {}

    def get(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        return {k: self._data[(model, k)] for k in keys if (model, k) in self._data}

    def put(self, model: str, vectors: Mapping[str, np.ndarray]) -> None:
        for key, vector in vectors.items():
            self._data[(model, key)] = np.asarray(vector, dtype=np.float32)

    def __len__(self) -> int:
        return len(self._data)


class ReadThroughCache:
    """Reads another cache and keeps what is put in memory: for a preview while a run (which may be
    rewriting a paper's text and its stored vectors) holds the lock."""

    def __init__(self, inner: VectorCache) -> None:
        self.inner = inner
        self.memory = MemoryVectorCache()

    def get(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found = self.memory.get(model, keys)
        rest = [k for k in keys if k not in found]
        return {**self.inner.get(model, rest), **found} if rest else found

    def put(self, model: str, vectors: Mapping[str, np.ndarray]) -> None:
        self.memory.put(model, vectors)


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
