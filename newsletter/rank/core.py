"""What both rankers share: prepare the papers once, then score subscribers in chunks of arrays.

``prepare(papers, background)`` tokenises (and, for the semantic ranker, embeds) the candidates, a
background of recent papers (where liked papers are looked up) and the fixed reference papers;
z-scores, IDF and how common a phrase is are taken over the reference papers alone, so a score does
not depend on how many papers the store holds (one, three or thousands). ``rank_many`` scores a chunk
of profiles with a few array operations over the distinct texts in the chunk, then emits one list
per subscriber, computing reasons only for the papers it emits.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from newsletter.models import Scored, StoredPaper, Subscriber, arxiv_id_in
from newsletter.rank.index import LexicalIndex, QueryBatch, blended, remember, strongest
from newsletter.rank.less import less_like
from newsletter.rank.naming import Acronyms
from newsletter.rank.profile import LIKED_PREFIX, Layout, Profile, compile_profile
from newsletter.rank.reasons import Reasons, WordEvidence
from newsletter.rank.reference import reference_papers
from newsletter.rank.scoring import (
    BatchScores,
    Catalog,
    Columns,
    Exclusions,
    Named,
    Sentences,
    View,
    emit,
    padded,
    row_max,
    standard_z,
    tie_order,
    view_columns,
)
from newsletter.rank.text import compounds, lossy, paper_words, short_term

LIKED_TERMS = 25  # the liked papers' words kept in a words query (MoreLikeThis keeps 25)


class ChunkedRanker:
    """prepare / rank / rank_many over :meth:`score_batch`, which subclasses implement."""

    chunk = 1024  # subscribers scored together in one array

    def __init__(self) -> None:
        self._catalog = Catalog(())
        self._background: tuple[StoredPaper, ...] = ()
        self._index = LexicalIndex(())
        self._stats = np.zeros(0, dtype=np.int64)
        self._acronyms = Acronyms()
        self._named: dict[str, np.ndarray] = {}
        self._last_view: View | None = None
        self._prepared_for: tuple[object, ...] = ()

    def prepare(self, papers: Sequence[StoredPaper], background: Sequence[StoredPaper] = ()) -> None:
        """Tokenise the candidates, the background and the reference papers once: again only for other
        papers (each of `serve`'s pages prepares; on 5,000 papers that took 6 s a page, unchanged)."""
        given = (tuple(papers), tuple(background), getattr(self, "params", None))
        if given == self._prepared_for:
            return
        self._prepared_for = ()  # until done: embedding a stop cut short must be done again
        self._background = tuple(background)
        reference = reference_papers()
        self._catalog = Catalog([*papers, *background, *reference])
        self._stats = np.unique(self._catalog.rows_of(reference))
        self._index = LexicalIndex(self._catalog.papers, self._stats)
        self._acronyms = Acronyms(f"{p.title}. {p.abstract}" for p in self._catalog.papers)
        self._named = {}
        self._last_view = None
        self._prepared()
        self._prepared_for = given

    def _prepared(self) -> None:
        """Hook: per-paper work beyond tokenising (the semantic ranker embeds here)."""

    @property
    def words_column(self) -> str:
        """How `newsletter explain` names the last column, the profile's words (TF-IDF)."""
        return "the words of your profile"

    def rank(self, papers: Sequence[StoredPaper], subscriber: Subscriber) -> list[Scored]:
        """Every paper, best first, each with ``relevant`` and a reason set."""
        return next(self.rank_many(papers, [subscriber], only_relevant=False))

    def rank_many(
        self,
        papers: Sequence[StoredPaper],
        subscribers: Iterable[Subscriber],
        only_relevant: bool = True,
        capped: bool = False,
    ) -> Iterator[list[Scored]]:
        """One list per subscriber, in order, best first; only the relevant papers when ``only_relevant``,
        and at most the subscriber's ``max_items`` (what a digest holds) when ``capped``.

        Lazy: subscribers are read and scored ``chunk`` at a time, so memory stays flat.
        """
        papers = tuple(papers)
        if self._catalog.missing(papers):
            self.prepare([*self._catalog.papers, *self._catalog.missing(papers)], self._background)
        view = self._view(papers)
        chunks = _chunks(subscribers, self.chunk)
        if not papers:
            for chunk in chunks:
                yield from ([] for _ in chunk)
            return

        def score(chunk: list[Subscriber]) -> BatchScores:
            return self.score_batch([compile_profile(self.readable(s)) for s in chunk], view)

        for chunk, scores in _ahead(chunks, score):
            caps = np.array([s.max_items for s in chunk]) if capped else None
            yield from emit(view, scores, only_relevant, caps)

    def _view(self, papers: tuple[StoredPaper, ...]) -> View:
        """The candidates' arrays; kept while the same papers are ranked again (preview, tests)."""
        if self._last_view is not None and self._last_view.papers == papers:
            return self._last_view
        self._last_view = self._new_view(papers)
        return self._last_view

    def _new_view(self, papers: tuple[StoredPaper, ...]) -> View:
        rows = self._catalog.rows_of(papers)
        cols, cand, stats = view_columns(rows, self._stats)
        postings = self._index.postings(cols)
        vectors, titles, sentences = self._vectors_at(cols)
        return View(papers, rows, cols, cand, stats, tie_order(papers), postings, vectors, titles, sentences)

    def _vectors_at(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, Sentences]:
        """(paper, title, sentence vectors) of the prepared rows ``cols``; none for a lexical ranker."""
        none = np.zeros((len(cols), 0), dtype=np.float32)
        return none, none, Sentences.none(len(cols))

    def score_batch(self, profiles: Sequence[Profile], view: View) -> BatchScores:
        raise NotImplementedError

    # ------------------------------------------------------------ shared evidence

    def literal_table(self, layout: Layout, view: View, half: float, scattered: float = 0.0) -> np.ndarray:
        """(texts, candidates) literal phrase strength of each interest and excluded topic (else 0)."""
        out = np.zeros((len(layout.texts), len(view.papers)), dtype=np.float32)
        for i in layout.phrase_ids().tolist():
            out[i] = self._index.literal(layout.texts[i], half, scattered)[view.rows]
        return out

    def stated_table(
        self, layout: Layout, literal: np.ndarray, view: View, half: float, scattered: float = 0.0
    ) -> np.ndarray:
        """(texts, candidates) the ``literal`` table, each excluded short term ("3D", "RL") read as
        stated also by what it stands for or its other spelling (see :meth:`stated`)."""
        out = literal.copy()
        for i in np.unique(layout.exclude[layout.exclude >= 0]).tolist():
            if short_term(layout.texts[i]):
                out[i] = self.stated(layout.texts[i], literal[i], view, half, scattered)
        return out

    def stated(self, term: str, literal: np.ndarray, view: View, half: float, scattered: float) -> np.ndarray:
        """(candidates,) how strongly each paper states the short ``term``: its ``literal`` row, what it
        stands for ("reinforcement learning" for "RL"; "three-dimensional" for "3D") or its other
        spelling ("3-D"). A term whose words drop a number ("GPT-4") is stated only as written."""
        said = np.zeros_like(literal) if lossy(term) else literal
        out = np.maximum(said, self._index.written(term, half)[view.rows])
        for phrase in self._acronyms.stated_by(term):
            out = np.maximum(out, self._index.literal(phrase, half, scattered)[view.rows])
        return out

    def naming_table(self, layout: Layout, view: View) -> np.ndarray:
        """(texts, candidates) 2 where a paper names the interest (title or first sentence), 1 where its
        title names it loosely ("object segmentation" for "video object segmentation"; "Transformers on
        Molecular Graphs" for "graph transformers")."""
        out = np.zeros((len(layout.texts), len(view.papers)), dtype=np.float32)
        for i in np.unique(layout.interests[layout.interests >= 0]).tolist():
            text = layout.texts[i]
            if text not in self._named:
                forms = self._acronyms.forms(text)
                strong, weak = (self._spelled(f, text) for f in forms)
                spelled = {form for form in strong if len(form) > 1}
                shorts = {form[0] for form in forms[0] if len(form) == 1} if spelled else set()
                named = np.maximum(
                    2.0 * self._index.naming(strong, meanings=spelled, acronyms=shorts),
                    self._index.naming(weak, lead=False, meanings=spelled) | self._index.naming_apart(strong),
                )
                remember(self._named, text, named.astype(np.float32))
            out[i] = self._named[text][view.rows]
        return out

    def _spelled(self, forms: set[tuple[str, ...]], text: str) -> set[tuple[str, ...]]:
        """The forms with every spelling of their hyphenated compounds (LexicalIndex.spellings)."""
        own = dict(compounds(text))
        return {spelling for form in forms for spelling in self._index.spellings(form, own)}

    def words_queries(self, layout: Layout, liked_words: float = 0.0) -> QueryBatch:
        """Each profile's interests and about text as one TF-IDF query, moved towards the words of its
        liked papers (those marked "more like this" too) as in Rocchio's relevance feedback: q +
        ``liked_words`` x the liked papers' pooled words, normalised. A click then also teaches words
        ("MRI", "CT") that none of the profile's phrases has."""
        base = self._index.queries(layout.texts, self._profile_texts(layout))
        if not liked_words or not (layout.liked >= 0).any():
            return base
        liked = strongest(self._index.queries(self._liked_texts(layout), layout.liked), LIKED_TERMS)
        return blended(base, liked, liked_words)

    def words_z(self, layout: Layout, view: View, liked_words: float) -> tuple[QueryBatch, np.ndarray]:
        """The words queries (see :meth:`words_queries`) and each candidate's z-scored TF-IDF cosine
        with them; a liked paper that is itself a candidate scores against the profile's own words."""
        queries = self.words_queries(layout, liked_words)
        z = standard_z(self._index.cosine(queries, view.postings), view)
        if not liked_words:
            return queries, z
        profiles, candidates = self._liked_at(layout, view)
        if len(profiles):
            rows, which = np.unique(profiles, return_inverse=True)
            own = self._index.queries(layout.texts, self._profile_texts(layout)[rows])
            z[profiles, candidates] = standard_z(self._index.cosine(own, view.postings), view)[
                which, candidates
            ]
        return queries, z

    def _profile_texts(self, layout: Layout) -> np.ndarray:
        """(profiles, texts) ids of each profile's interests and about text: its words query."""
        return np.concatenate([layout.interests, layout.about], axis=1)

    def _liked_at(self, layout: Layout, view: View) -> tuple[np.ndarray, np.ndarray]:
        """(profile, candidate) of every liked paper that is a candidate of the view; each distinct
        liked text is looked up once."""
        candidate = np.full(len(layout.texts) + 1, -1, dtype=np.int64)  # the last row reads id -1
        for i in layout.liked_ids().tolist():
            row = self._catalog.find(layout.texts[i][len(LIKED_PREFIX) :])
            if row is not None and row in view.candidate_of:
                candidate[i] = view.candidate_of[row]
        at = candidate[layout.liked]
        profiles, slots = np.nonzero(at >= 0)
        return profiles, at[profiles, slots]

    def _liked_texts(self, layout: Layout) -> list[str]:
        """The layout's texts, each liked paper as its title and abstract (its title alone if unknown)."""
        texts = list(layout.texts)
        for i in layout.liked_ids().tolist():
            title = texts[i][len(LIKED_PREFIX) :]
            row = self._catalog.find(title)
            texts[i] = title if row is None else paper_words(self._catalog.papers[row])
        return texts

    def words_like(self, items: Sequence[str], view: View) -> np.ndarray:
        """(items, candidates) TF-IDF z-score of each candidate against each paper named (its title and
        abstract when prepared, else the text given); +inf where the candidate is that paper."""
        rows = [self._catalog.find(item) for item in items]
        texts = [
            item if r is None else paper_words(self._catalog.papers[r])
            for item, r in zip(items, rows, strict=True)
        ]
        queries = self._index.queries(texts, np.arange(len(texts))[:, None])
        similarity = self._index.cosine(queries, view.postings)
        position = {int(r): j for j, r in enumerate(view.cols.tolist())}
        for j, row in enumerate(rows):  # a paper is no reference for its own similarity
            if row is not None and row in position:
                similarity[j, position[row]] = np.nan
        return np.nan_to_num(standard_z(similarity, view), nan=np.inf)

    def finish(
        self,
        columns: Columns,
        exclusions: Exclusions,
        threshold: float | np.ndarray,
        reasons: tuple[Sequence[Profile], Layout, np.ndarray, QueryBatch, View],
        corroborate: bool = False,
        named: Named | None = None,
        supported: np.ndarray | None = None,
    ) -> BatchScores:
        """The chunk's verdicts, with the reasons to compute for what is emitted.

        With ``corroborate``, relevant papers are ordered by their two best columns (see
        :meth:`BatchScores.values`); the verdict is always the best column against the threshold.
        A paper naming an interest is raised to the bar, and its reason says so. Any other paper must
        also be ``supported`` (by its words, where given) to be relevant.
        """
        profiles, layout, literal, queries, view = reasons
        words = WordEvidence(self._index, queries, view.postings, view.cand)
        excluded = exclusions.mask
        lifted = None
        if named is not None:
            floor = np.broadcast_to(np.asarray(threshold, dtype=np.float32), (len(profiles), 1))
            lifted = Named(named.mask & (columns.best < floor), named.table)
            np.maximum(columns.best, np.where(named.mask, floor, -np.inf), out=columns.best)
        explain = Reasons(profiles, layout, literal, words, self._catalog.title, lifted)
        relevant = (columns.best >= threshold) & ~excluded
        unsupported = None
        if supported is not None:
            unsupported = relevant & ~supported & ~(named.mask if named is not None else False)
            relevant &= ~unsupported
        bars = np.broadcast_to(np.asarray(threshold, dtype=np.float32), (len(profiles), 1))
        scores = BatchScores(
            columns, excluded, exclusions, relevant, explain, bars if corroborate else None, bars, unsupported
        )
        return less_like(scores, profiles, view, self.similar_to, self._catalog.title)

    def breakdown(self, papers: Sequence[StoredPaper], subscriber: Subscriber) -> BatchScores:
        """One subscriber's scores over ``papers``, column by column (for `newsletter explain`)."""
        papers = tuple(papers)
        if self._catalog.missing(papers):
            self.prepare([*self._catalog.papers, *self._catalog.missing(papers)], self._background)
        return self.score_batch([compile_profile(self.readable(subscriber))], self._view(papers))

    def readable(self, subscriber: Subscriber) -> Subscriber:
        """The subscriber without the liked papers named by an arXiv id or URL that no stored paper has:
        such a name has no text to compare ("2306.00978" was embedded as it is), yet it made a column
        and raised the bar for every paper. A title stays: it says what the paper is about."""
        find = self._catalog.find
        liked = tuple(i for i in subscriber.liked if arxiv_id_in(i) is None or find(i) is not None)
        return subscriber if liked == subscriber.liked else subscriber.model_copy(update={"liked": liked})

    def similar_to(self, items: Sequence[str], view: View) -> np.ndarray:
        """(items, candidates) each candidate's similarity to each paper named, as a liked-paper column."""
        raise NotImplementedError

    def not_itself(
        self, layout: Layout, view: View, table: np.ndarray, at: dict[int, int] | None = None
    ) -> np.ndarray:
        """-inf where a liked paper is itself a candidate: it is not 'similar to a paper you liked'.
        ``at``: catalog row -> column of ``table`` (default: the candidates)."""
        at = view.candidate_of if at is None else at
        for i in layout.liked_ids().tolist():
            row = self._catalog.find(layout.texts[i][len(LIKED_PREFIX) :])
            if row is not None and row in at:
                table[i, at[row]] = -np.inf
        return table

    def liked_offset(
        self, every: np.ndarray, layout: Layout, view: View, scale: float = 1.0
    ) -> np.ndarray | None:
        """(profiles, candidates) what each liked-paper column gains so that, together, they read as ONE
        column: the best of a profile's liked papers, z-scored against that best's own spread over the
        reference papers (a best of twenty is high for any paper: twenty "more like this" let through
        what one does, and the bar counts them once). ``every``: (texts, len(view.cols)) the liked
        texts' columns at every scored paper, in units of ``scale`` per z."""
        has = (layout.liked >= 0).any(axis=1)
        if not has.any():
            return None
        cols = {int(r): j for j, r in enumerate(view.cols.tolist())}
        top = row_max(padded(self.not_itself(layout, view, every, cols)), layout.liked[has])
        raw = np.take(top, view.cand, axis=1)
        calibrated = scale * standard_z(np.where(np.isneginf(top), np.nan, top) / scale, view)
        offset = np.zeros((layout.liked.shape[0], len(view.cand)), dtype=np.float32)
        offset[has] = np.where(np.isfinite(raw), calibrated - raw, 0.0)
        return offset


def named_papers(table: np.ndarray, layout: Layout, gate: np.ndarray, level: float) -> Named:
    """The papers naming one of the profile's interests (``table``: naming_table), where ``gate`` (how
    close the paper is to the whole profile, as a z-score) reaches ``level`` (one more for a name
    without its domain word)."""
    if not layout.interests.shape[1]:
        return Named(np.zeros(gate.shape, dtype=bool), table)
    strength = row_max(padded(table, 0.0), layout.interests)
    return Named(((strength >= 2) & (gate >= level)) | ((strength >= 1) & (gate >= level + 1)), table)


def _ahead(
    chunks: Iterator[list[Subscriber]], score: Callable[[list[Subscriber]], BatchScores]
) -> Iterator[tuple[list[Subscriber], BatchScores]]:
    """(chunk, score(chunk)) for each chunk, the next one scored in a worker thread while this one is used.

    Array work releases the GIL, so scoring chunk k + 1 overlaps emitting chunk k on a second core.
    A single chunk is scored in the calling thread.
    """
    first = next(chunks, None)
    second = next(chunks, None)
    if first is None:
        return
    if second is None:
        yield first, score(first)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rank") as pool:
        previous, pending = first, pool.submit(score, first)
        for chunk in itertools.chain([second], chunks):
            current, pending = pending, pool.submit(score, chunk)
            yield previous, current.result()
            previous = chunk
        yield previous, pending.result()


def _chunks(items: Iterable[Subscriber], size: int) -> Iterator[list[Subscriber]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
