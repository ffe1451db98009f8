"""Semantic ranking: sentence embeddings plus lexical evidence, calibrated per query by z-scores.

For each part of a profile (each interest, the about text, each liked paper) the cosine similarity
of every paper becomes a robust z-score against the prepared papers (how far above a typical paper
it is), so one scale works for short and long queries alike. An interest is matched against the
whole paper, its title and its best sentence, and read in the context of the whole profile
("Python" beside "program synthesis" is not the snake); a literal phrase match adds to its
interest's column, and a TF-IDF column over the profile's words catches exact terminology. A
paper's score is its best column, so one strongly matched interest is enough; the bar that score
must clear rises with the number of columns, so every profile lets through the same small share
of unrelated papers, whether it has two interests or ten. Relevant papers are then listed by the
mean of their two best columns (never below that bar): a paper two parts of the profile agree on
comes before one that a single phrase matches strongly.

Scoring is vectorised over subscribers: distinct profile texts are embedded once (and cached by
content), paper vectors are cached by paper key, and a batch of profiles is a few matrix products.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from newsletter.errors import RankError
from newsletter.models import StoredPaper
from newsletter.rank.core import ChunkedRanker, named_papers
from newsletter.rank.embed import Embedder, MemoryVectorCache, VectorCache
from newsletter.rank.lexical import LexicalParams
from newsletter.rank.minilm import INSTALL_HINT, MiniLMEmbedder, minilm_available
from newsletter.rank.profile import LIKED_PREFIX, Layout, Profile
from newsletter.rank.scoring import (
    BatchScores,
    Columns,
    Exclusions,
    Sentences,
    View,
    everywhere,
    max_threshold,
    padded,
    robust_z,
    row_max,
)
from newsletter.rank.text import paper_text, plain_word, sentences, short_term

WORDS_SCALE = LexicalParams().words_scale  # TF-IDF z -> the lexical ranker's column scale

log = logging.getLogger(__name__)

QUERY_MEMO = 1 << 15  # profile-text vectors kept in memory between chunks


@dataclass(frozen=True, slots=True)
class SemanticParams:
    """Global knobs (never per subscriber). Chosen by leave-one-profile-out over the twelve dev profiles
    (benchmarks/ranking.py --grid; the README gives the grids): chance, naming_gate, liked_set,
    words_gate, context, literal_gate, plain_gate, exclude_threshold, lexical_weight, words_weight,
    phrase_half, scattered, spell_acronyms, liked_words, support. chance, words_gate and support with the
    scores calibrated out of sample (--reference: papers other than the judged ones), as a user's papers
    always are.
    typical: by the off-domain tests (the dev papers are all ML papers); titles, sentences and
    corroborate: with ranking_research.py."""

    chance: float = 0.001  # share of unrelated papers let through; sets each profile's threshold
    lexical_weight: float = 3.0  # added to an interest's column at full literal phrase strength
    phrase_half: float = 1.0  # weighted mentions that give half the literal strength
    context: float = 2.0  # weight of the whole profile's z-score averaged into each interest's
    words_weight: float = 1.0  # TF-IDF z-score over the profile's words -> column score
    exclude_threshold: float = 2.0  # an excluded topic scoring this high means the paper is about it
    exclude_stated: float = 0.5  # literal strength (one mention) a short excluded term ("3D") also needs
    literal_gate: float = 0.5  # profile z-score at which a literal match counts fully (0: always)
    plain_gate: float = 2.0  # ... for an interest written as one plain lower-case word ("kernels")
    titles: bool = True  # an interest's z-score averages its z against whole papers and against titles
    sentences: bool = True  # ... and against each paper's best-matching abstract sentence
    corroborate: bool = True  # relevant papers ordered by their two best columns, not the best alone
    naming_gate: float = 0.0  # profile z-score a paper naming an interest needs to be relevant (-inf: none)
    liked_set: bool = True  # liked papers (and "more like this") count as one column, calibrated as one
    typical: float = 0.05  # the least cosine a typical paper is taken to have to any text (-inf: none)
    words_gate: float = 3.0  # profile z-score at which the TF-IDF column counts fully (0: always)
    scattered: float = 0.5  # a long interest's words all in one sentence, in any order: share of a mention
    spell_acronyms: bool = True  # a phrase that is one acronym is embedded with what it stands for
    liked_words: float = 0.75  # Rocchio's beta (the textbook value): liked papers' words in the words query
    support: float = 0.4  # the words' evidence a relevant paper needs, lexical ranker's scale (-inf: off)


def semantic_available() -> bool:
    """True when the bundled model and its runtime can be imported."""
    return minilm_available()


class SemanticRanker(ChunkedRanker):
    """Hybrid ranker: embeddings for meaning, literal phrase matches and TF-IDF as extra evidence."""

    name = "semantic"

    def __init__(
        self,
        embedder: Embedder | None = None,
        cache: VectorCache | None = None,
        params: SemanticParams | None = None,
    ) -> None:
        if embedder is None and not semantic_available():
            raise RankError("the semantic ranker's model package is not installed", hint=INSTALL_HINT)
        super().__init__()
        self.embedder = embedder if embedder is not None else MiniLMEmbedder()
        self.cache = cache if cache is not None else MemoryVectorCache()
        self.params = params or SemanticParams()
        self._vectors = np.zeros((0, self.embedder.dim), dtype=np.float32)
        self._titles = np.zeros((0, self.embedder.dim), dtype=np.float32)
        self._sentences = Sentences.none()
        self._queries: dict[str, np.ndarray] = {}
        self._phrase_view: View | None = None  # the view the phrase rows below were computed for
        self._phrase_rows: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------ vectors

    def _prepared(self) -> None:
        """Embed (or fetch from the cache) every prepared paper once (and its title, when used)."""
        self._vectors = self.embed_papers(self._catalog.papers)
        if self.params.titles:
            self._titles = self.embed_titles(self._catalog.papers)
        if self.params.sentences:
            self._sentences = self.embed_sentences(self._catalog.papers)

    def _vectors_at(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, Sentences]:
        titles = self._titles[cols] if self.params.titles else np.zeros((len(cols), 0), dtype=np.float32)
        sentences = self._sentences.take(cols) if self.params.sentences else Sentences.none(len(cols))
        return self._vectors[cols], titles, sentences

    def embed_sentences(self, papers: Sequence[StoredPaper]) -> Sentences:
        """Each abstract's sentence vectors, cached by (sentence:<model>, paper key#n).

        The keys number the sentences, so a change to how abstracts are split needs a new cache name.
        """
        split = [sentences(p) for p in papers]
        keys = [f"{p.key}#{i}" for p, parts in zip(papers, split, strict=True) for i in range(len(parts))]
        found = self._cached(f"sentence:{self.embedder.name}", keys, [s for parts in split for s in parts])
        starts = np.concatenate([[0], np.cumsum([len(parts) for parts in split])]).astype(np.int64)
        return Sentences(self._stack([found[k] for k in keys]), starts)

    def embed_titles(self, papers: Sequence[StoredPaper]) -> np.ndarray:
        """Title-only vectors, cached by (title:<model>, paper key): short queries often match titles best."""
        keys = [p.key for p in papers]
        found = self._cached(f"title:{self.embedder.name}", keys, [p.title for p in papers])
        return self._stack([found[k] for k in keys])

    def embed_papers(self, papers: Sequence[StoredPaper]) -> np.ndarray:
        """Paper vectors from the cache by (model name, paper key); misses are embedded and stored."""
        keys = [p.key for p in papers]
        found = self._cached(self.embedder.name, keys, [paper_text(p) for p in papers])
        return self._stack([found[k] for k in keys])

    def vector_keys(self, papers: Sequence[StoredPaper]) -> dict[str, list[str]]:
        """The cache keys of the papers' paper, title and sentence vectors, by cache model name."""
        name, split = self.embedder.name, [sentences(p) for p in papers]
        keys = [p.key for p in papers]
        numbered = [f"{p.key}#{i}" for p, parts in zip(papers, split, strict=True) for i in range(len(parts))]
        return {name: keys, f"title:{name}": keys, f"sentence:{name}": numbered}

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Profile texts' vectors: memoised, else from the cache under 'query:<model>', else embedded."""
        if len(self._queries) + len(texts) > QUERY_MEMO:
            self._queries.clear()
        todo = [t for t in dict.fromkeys(texts) if t not in self._queries]
        if todo:
            self._queries.update(self._cached(f"query:{self.embedder.name}", todo, todo))
        return self._stack([self._queries[t] for t in texts])

    def _cached(self, model: str, keys: list[str], texts: list[str]) -> dict[str, np.ndarray]:
        found = self.cache.get(model, keys) if keys else {}
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if todo:
            fresh = self.embedder.embed(list(todo.values()))
            new = dict(zip(todo, np.asarray(fresh, dtype=np.float32), strict=True))
            self.cache.put(model, new)
            found = {**found, **new}
        return found

    def _stack(self, vectors: list[np.ndarray]) -> np.ndarray:
        if not vectors:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.stack(vectors).astype(np.float32, copy=False)

    def _text_vectors(self, layout: Layout) -> np.ndarray:
        """Vectors of the layout's texts: a liked paper that is prepared uses its own vector."""
        return self._vectors_of(layout.texts)

    def similar_to(self, items: Sequence[str], view: View) -> np.ndarray:
        """(items, candidates) how close each candidate is to each paper named, by the two kinds of
        evidence a profile's score has: the z-scored similarity of their vectors, and of their words
        (TF-IDF, weighted as the profile's words column). +inf where the candidate is that paper."""
        vectors = self._vectors_of([LIKED_PREFIX + item for item in items])
        words = self.params.words_weight * self.words_like(items, view)
        return np.maximum(self._z(vectors @ view.vectors.T, view), words)

    def _vectors_of(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.embedder.dim), dtype=np.float32)
        plain: list[tuple[int, str]] = []
        for i, text in enumerate(texts):
            row = self._catalog.find(text[len(LIKED_PREFIX) :]) if text.startswith(LIKED_PREFIX) else None
            if row is not None:
                out[i] = self._vectors[row]
            else:
                plain.append((i, text.removeprefix(LIKED_PREFIX)))
        if plain:
            out[[i for i, _ in plain]] = self.embed_queries([self._as_read(t) for _, t in plain])
        return out

    def _as_read(self, text: str) -> str:
        """The text the model embeds for a profile text: an acronym alone is spelled out (see
        Acronyms.spelled); the model knows "Fourier neural operator", not "FNO"."""
        return self._acronyms.spelled(text) if self.params.spell_acronyms else text

    @property
    def words_column(self) -> str:
        if not self.params.words_gate:
            return super().words_column
        return f"{super().words_column}, weighted by how close the paper is to your whole profile"

    # ------------------------------------------------------------ scoring

    def score_batch(self, profiles: Sequence[Profile], view: View) -> BatchScores:
        """Columns [interests | about | liked | profile words], reduced to the best one per paper."""
        layout = Layout.of(profiles)
        vectors = self._text_vectors(layout)
        sims = vectors @ view.vectors.T  # (texts, scored papers)
        z_text = self._z(sims, view)  # (texts, candidates), once per distinct text
        if self.params.titles or self.params.sentences:
            z_text = self._with_passages(vectors, z_text, layout, view)
        literal = self.literal_table(layout, view, self.params.phrase_half, self.params.scattered)
        columns = Columns(len(profiles), len(view.papers))
        z_profile = self._z_profile(sims, layout, view)
        self._add_interests(columns, z_profile, z_text, literal, layout)
        columns.add_table(padded(z_text), layout.about)
        liked = self._liked_set(sims, layout, view) if self.params.liked_set else None
        columns.add_table(self.not_itself(layout, view, padded(z_text)), layout.liked, liked)
        queries, z_words = self.words_z(layout, view, self.params.liked_words)
        words = self.params.words_weight * z_words
        if self.params.words_gate:
            words *= np.clip(z_profile / self.params.words_gate, 0.0, 1.0)
        columns.add(words)
        topic = self._topics(z_text, literal, layout, view)
        exclusions = Exclusions(topic, layout.exclude, self.params.exclude_threshold)
        threshold = max_threshold(layout.columns(self.params.liked_set), self.params.chance)[:, None]
        reasons = (profiles, layout, literal, queries, view)
        named = named_papers(self.naming_table(layout, view), layout, z_profile, self.params.naming_gate)
        supported = self._supported(literal, z_words, layout)
        return self.finish(columns, exclusions, threshold, reasons, self.params.corroborate, named, supported)

    def _topics(self, z_text: np.ndarray, literal: np.ndarray, layout: Layout, view: View) -> np.ndarray:
        """(texts + 1, candidates) how much each paper is about each excluded topic: its z-score plus
        the literal bonus. A short term ("3D", "RL", "GAN") must also be stated, by its letters or by
        what it stands for (ChunkedRanker.stated): the model finds "3D" close to most vision papers,
        and a paper on video editing that never says 3D was left out "about '3D'". Its bonus is how
        strongly it is stated, in any of these forms: a paper writing "3-D meshes" is as much about 3D
        as one writing "3D meshes" (it was let through, its bonus counting the letters "3D" alone)."""
        stated = self.stated_table(layout, literal, view, self.params.phrase_half, self.params.scattered)
        topic = z_text + self.params.lexical_weight * stated
        for i in np.unique(layout.exclude[layout.exclude >= 0]).tolist():
            if short_term(layout.texts[i]):
                topic[i] = np.where(stated[i] >= self.params.exclude_stated, topic[i], -np.inf)
        return padded(topic)

    def _supported(self, literal: np.ndarray, z_words: np.ndarray, layout: Layout) -> np.ndarray | None:
        """(profiles, candidates) do the paper's words support the model's verdict? The lexical ranker's
        evidence, on its scale (its bar is 0.7): an interest stated (0.5 for one mention in the
        abstract, 0.75 in the title) or the TF-IDF closeness of the paper's words to the profile's
        (its z x the lexical words scale) must reach ``support``. The model alone finds neighbouring
        fields close: any paper on proteins for a reader of protein structure prediction, any graph
        method for a reader of one kind of graph network. None when off."""
        if not np.isfinite(self.params.support):
            return None
        stated = row_max(padded(literal, 0.0), layout.interests)
        return np.maximum(stated, WORDS_SCALE * z_words) >= self.params.support

    def _liked_set(self, sims: np.ndarray, layout: Layout, view: View) -> np.ndarray | None:
        """The liked papers' columns read as one (ChunkedRanker.liked_offset)."""
        ids = layout.liked_ids()
        every = np.full(sims.shape, -np.inf, dtype=np.float32)
        if len(ids):
            every[ids] = self._z(sims[ids], everywhere(view))  # as z_text's liked rows
        return self.liked_offset(every, layout, view)

    def _add_interests(
        self, columns: Columns, z_profile: np.ndarray, z_text: np.ndarray, literal: np.ndarray, layout: Layout
    ) -> None:
        """z-scored similarity to each interest read in its profile's context, plus the literal bonus.

        (z(interest) + c * z(profile)) / (1 + c) + w * gate * literal, the profile being the mean of
        its interests and about. Reading an interest in its profile's context keeps "Python" beside
        "program synthesis" from matching snakes; the gate (0..1, see _literal_gates) keeps a
        generic word such as "kernels" or "graphs" from counting in a paper on another subject.
        The per-text part is computed once per distinct text.
        """
        c = self.params.context
        if not self.params.literal_gate:
            table = padded(z_text / (1 + c) + self.params.lexical_weight * literal)
            context = c / (1 + c) * z_profile if c else None
            columns.add_table(table, layout.interests, context)
            return
        semantic, bonus = padded(z_text / (1 + c)), padded(self.params.lexical_weight * literal, 0.0)
        gates = self._literal_gates(z_profile, layout)
        columns.add_gated(semantic, bonus, gates, layout.interests, c / (1 + c) * z_profile)

    def _literal_gates(self, z_profile: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
        """How much of each interest's literal bonus counts: (2, profiles, candidates) gates, full once
        the paper is ``literal_gate`` z above a typical paper for the whole profile (0), or
        ``plain_gate`` z (1); and (profiles, interests) which one each interest takes. An interest
        written as one plain word ("kernels"; names are written as names: "NeRF", "ViT") takes
        the second: other fields use such words in other senses."""
        levels = (self.params.literal_gate, self.params.plain_gate)
        gates = np.stack([np.clip(z_profile / level, 0.0, 1.0) for level in levels])
        plain = np.array([plain_word(t) for t in layout.texts] + [False])[layout.interests]
        return gates, plain.astype(np.int64)

    def _with_passages(
        self, vectors: np.ndarray, z_text: np.ndarray, layout: Layout, view: View
    ) -> np.ndarray:
        """Phrases (interests, excluded topics) average their z-scores against whole papers, against
        titles and against each paper's best-matching abstract sentence.

        A short phrase is one topic; a whole abstract mixes several, so the phrase often matches a
        title or one sentence much better than the paper's single vector (a drone-imaging paper
        whose field study is coral reef monitoring says so in one sentence). Averaging (not taking
        the best of the three) keeps one noisy title or sentence match from making an unrelated
        paper relevant. A phrase's row depends only on its text and the papers, so it is kept for
        the chunks that follow.
        """
        if self._phrase_view is not view or len(self._phrase_rows) > QUERY_MEMO:
            self._phrase_view, self._phrase_rows = view, {}
        rows, texts = self._phrase_rows, layout.texts
        ids = layout.phrase_ids()
        todo = np.array([i for i in ids.tolist() if texts[i] not in rows], dtype=np.int64)
        if len(todo):
            parts = [z_text[todo]]
            if self.params.titles:
                parts.append(self._z(vectors[todo] @ view.titles.T, view))
            if self.params.sentences:
                parts.append(self._z(view.sentences.best(vectors[todo]), view))
            mean = np.stack(parts).mean(axis=0)
            rows.update((texts[i], mean[j]) for j, i in enumerate(todo.tolist()))
        if len(ids):
            z_text[ids] = np.stack([rows[texts[i]] for i in ids.tolist()])
        return z_text

    def _z(self, sims: np.ndarray, view: View) -> np.ndarray:
        """Robust z-scores of cosine similarities against the reference papers, their median taken as
        at least ``typical`` (every column, the liked set and "less like this" read the same scale)."""
        return robust_z(sims, view, typical=self.params.typical)

    def _z_profile(self, sims: np.ndarray, layout: Layout, view: View) -> np.ndarray:
        """z-score of each profile's mean similarity over its interests and about text."""
        parts = np.concatenate([layout.interests, layout.about], axis=1)
        table = padded(sims, fill=0.0)
        total = table[parts[:, 0]]
        for k in range(1, parts.shape[1]):
            total += table[parts[:, k]]
        total /= np.maximum((parts >= 0).sum(axis=1), 1)[:, None]
        return self._z(total, view)
