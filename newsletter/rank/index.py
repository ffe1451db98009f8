"""Tokenised papers: literal phrase strength and TF-IDF cosine, vectorised over many queries at once.

TF-IDF weights are kept as postings (term -> papers), so scoring a batch of queries costs the sum of
the query terms' document frequencies, not queries x vocabulary x papers. Query texts are tokenised
once per distinct text (interest phrases are shared by many profiles) and combined per profile with
array operations.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from newsletter.models import StoredPaper
from newsletter.rank.batch import ragged_arange
from newsletter.rank.naming import definitions
from newsletter.rank.text import (
    acronym,
    acronym_mentions,
    compounds,
    count_phrase,
    lead,
    other_spelling,
    phrase_tokens,
    sentences,
    tokens,
    tokens_as_written,
)

TITLE_WEIGHT = 3.0  # a phrase in the title counts as much as three mentions in the abstract
COMMON_SHARE = 0.05  # a phrase found in more than this share of papers needs proportionally more mentions
DENSE_WORK = 1 / 128  # a term goes dense when (queries using it x its papers) passes this share of all cells
SCATTERED_WORDS = 4  # a phrase this long may be stated with its words in another order (literal)
NAMING_SHARE = 0.15  # a sequence more than one reference paper in seven states names no subject
MEMO_LIMIT = 1 << 16  # memoised texts and phrases; the memo is emptied when it grows past this


@dataclass(frozen=True, slots=True)
class Postings:
    """TF-IDF weights restricted to some paper columns, as compressed rows by term."""

    indptr: np.ndarray  # (terms + 1,) where each term's entries start
    cols: np.ndarray  # column (position among the chosen papers) of each entry
    values: np.ndarray  # normalised TF-IDF weight of each entry
    keys: np.ndarray  # term * width + column, ascending: point look-ups
    width: int


@dataclass(frozen=True, slots=True)
class QueryBatch:
    """Many texts as L2-normalised TF-IDF queries; entries grouped by owner, terms known to the papers."""

    owner: np.ndarray  # which query each entry belongs to (ascending)
    term: np.ndarray
    weight: np.ndarray
    size: int
    with_extra: bool = False  # some queries hold another query's words too (see blended)

    def entries_of(self, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first entry, entry count) of each given owner."""
        start = np.searchsorted(self.owner, owners, side="left")
        return start, np.searchsorted(self.owner, owners, side="right") - start


class LexicalIndex:
    """Tokenised papers with TF-IDF postings; phrase strengths and query terms are memoised."""

    def __init__(self, papers: Sequence[StoredPaper], reference: np.ndarray | None = None) -> None:
        """``reference``: the rows document frequencies are counted over (default: every paper)."""
        self.papers = tuple(papers)
        self.titles = [tokens(p.title) for p in self.papers]
        self.abstracts = [tokens(p.abstract) for p in self.papers]
        self.leads = [tokens(lead(p)) for p in self.papers]
        hyphenated = [list(compounds(f"{p.title} {p.abstract}")) for p in self.papers]
        self.compounds = dict(c for found in hyphenated for c in found)
        self._joined = {parts: whole for whole, parts in self.compounds.items()}
        self.terms: dict[str, int] = {}
        term, doc, log_tf = self._count([[w for w, parts in found if len(parts) > 2] for found in hyphenated])
        self.names = list(self.terms)
        self.reference = np.arange(self.size) if reference is None else np.asarray(reference, dtype=np.int64)
        in_reference = np.zeros(self.size, dtype=bool)
        in_reference[self.reference] = True
        self.idf = self._idf(np.bincount(term[in_reference[doc]], minlength=len(self.terms)))
        self.unseen_idf = math.log(1 + len(self.reference)) + 1.0
        order = np.lexsort((doc, term))
        self.term, self.doc = term[order], doc[order]
        self.value = self._normalised(term, doc, log_tf)[order]
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(self.term, minlength=len(self.terms)))])
        self._extra: dict[str, int] = {}
        self._phrases: dict[tuple[str, float, float], np.ndarray] = {}
        self._written: dict[tuple[str, float], np.ndarray] = {}  # other spellings of short names
        self._defined: dict[int, dict[str, set[tuple[str, ...]]]] = {}  # paper -> acronyms it defines
        self._sentence_tokens: dict[int, list[list[str]]] = {}
        self._text_terms: dict[str, np.ndarray] = {}
        self.reasons: dict[int, str] = {}  # memoised 'shares words' reasons by packed term ids
        self.surface: dict[int, str] = {}  # term id -> a word as a profile wrote it, for reasons

    @property
    def size(self) -> int:
        return len(self.papers)

    def _count(self, long: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(term, doc, 1 + log tf) entries of the papers' tokens, a compound the papers hyphenate also
        counting as one word however it is written ('pre-training', 'pre training' and
        'pretraining' as 'pretraining', which 'co-training' is not). ``long``: each
        paper's hyphenated compounds of three parts or more (two-part ones are found as word pairs)."""
        term: list[int] = []
        doc: list[int] = []
        log_tf: list[float] = []
        for i, (title, abstract) in enumerate(zip(self.titles, self.abstracts, strict=True)):
            joined = [*self._pairs_joined(title), *self._pairs_joined(abstract), *long[i]]
            for t, c in Counter(title + abstract + joined).items():
                term.append(self.terms.setdefault(t, len(self.terms)))
                doc.append(i)
                log_tf.append(1.0 + math.log(c))
        return np.array(term, dtype=np.int64), np.array(doc, dtype=np.int64), np.array(log_tf)

    def _idf(self, df: np.ndarray) -> np.ndarray:
        return (np.log((1 + len(self.reference)) / (1 + df)) + 1.0).astype(np.float64)

    def _normalised(self, term: np.ndarray, doc: np.ndarray, log_tf: np.ndarray) -> np.ndarray:
        value = log_tf * self.idf[term] if term.size else log_tf
        norms = np.sqrt(np.bincount(doc, weights=value * value, minlength=self.size))
        return (value / np.maximum(norms, 1e-6)[doc]).astype(np.float32)

    # ------------------------------------------------------------ literal phrases

    def literal(self, phrase: str, half: float, scattered: float = 0.0) -> np.ndarray:
        """Per paper 0..1: how strongly it states the phrase (or its acronym). With ``scattered``, a
        phrase of SCATTERED_WORDS or more words whose words all stand in one sentence (or the title),
        in another order or with other words between, counts as that share of a mention."""
        key = (phrase, half, scattered)
        found = self._phrases.get(key)
        if found is None:
            found = self._strength(phrase, half, scattered)
            remember(self._phrases, key, found)
        return found

    def _strength(self, phrase: str, half: float, scattered: float) -> np.ndarray:
        """Weighted mentions m -> m / (m + needed); a phrase stated by many papers needs more."""
        counts = self._phrase_counts(phrase)
        share = float((counts[self.reference] > 0).mean()) if len(self.reference) else 0.0
        words = phrase_tokens(phrase)
        if scattered and len(set(words)) >= SCATTERED_WORDS:
            counts += scattered * self._scattered_counts(words)
        needed = half * max(1.0, share / COMMON_SHARE)
        return (counts / (counts + needed)).astype(np.float32)

    def _phrase_counts(self, phrase: str) -> np.ndarray:
        counts = np.zeros(self.size, dtype=np.float32)
        words, short = phrase_tokens(phrase), acronym(phrase)
        for form in (*self.spellings(words, dict(compounds(phrase))), (short,) if short else ()):
            for i in self._docs_with_all(form).tolist():
                if short and form == (short,):
                    counts[i] += self._acronym_counts(i, short, words)
                    continue
                counts[i] += TITLE_WEIGHT * count_phrase(self.titles[i], form)
                counts[i] += count_phrase(self.abstracts[i], form)
        return counts

    def written(self, term: str, half: float) -> np.ndarray:
        """Per paper 0..1: how strongly it states a short name with digits in its other spelling
        ("3-D" for "3D", see other_spelling), a title mention counting TITLE_WEIGHT; 0 for other terms."""
        key = (term, half)
        found = self._written.get(key)
        if found is None:
            counts = self._written_counts(other_spelling(term))
            found = (counts / (counts + half)).astype(np.float32)
            remember(self._written, key, found)
        return found

    def _written_counts(self, pattern: re.Pattern[str] | None) -> np.ndarray:
        if pattern is None:
            return np.zeros(self.size, dtype=np.float32)
        found = (
            TITLE_WEIGHT * len(pattern.findall(p.title)) + len(pattern.findall(p.abstract))
            for p in self.papers
        )
        return np.fromiter(found, dtype=np.float32, count=self.size)

    def _acronym_counts(self, i: int, short: str, words: tuple[str, ...]) -> float:
        """Weighted mentions of the phrase's acronym, written as one, in a paper not defining it as
        something else."""
        if self.redefines(i, short, {words}):
            return 0.0
        paper = self.papers[i]
        return TITLE_WEIGHT * acronym_mentions(paper.title, short) + acronym_mentions(paper.abstract, short)

    def _scattered_counts(self, words: tuple[str, ...]) -> np.ndarray:
        """Per paper: weighted sentences (the title weighing TITLE_WEIGHT) holding all the words but
        not the phrase itself ("optimal learning rate ... and batch size scales" for "learning rate
        and batch size scaling")."""
        counts = np.zeros(self.size, dtype=np.float32)
        wanted = set(words)
        for i in self._docs_with_all(words).tolist():
            parts = [(TITLE_WEIGHT, self.titles[i]), *((1.0, s) for s in self._sentences_of(i))]
            counts[i] = sum(w for w, part in parts if wanted <= set(part) and not count_phrase(part, words))
        return counts

    def _sentences_of(self, i: int) -> list[list[str]]:
        found = self._sentence_tokens.get(i)
        if found is None:
            found = [tokens(s) for s in sentences(self.papers[i])]
            remember(self._sentence_tokens, i, found)
        return found

    def spellings(
        self, form: tuple[str, ...], extra: Mapping[str, tuple[str, ...]] | None = None
    ) -> list[tuple[str, ...]]:
        """``form`` and its other spellings: each hyphenated compound the papers (or ``extra``) write
        either as one word or as parts ('finetuning' / 'fine-tuning' / 'fine tuning')."""
        extra = extra or {}
        joined = {parts: whole for whole, parts in extra.items()}
        split = tuple(t for w in form for t in extra.get(w) or self.compounds.get(w, (w,)))
        found = [form, split]
        for i, j in ((i, i + n) for n in range(2, 5) for i in range(len(split) - n + 1)):
            whole = joined.get(split[i:j]) or self._joined.get(split[i:j])
            if whole:
                found.append((*split[:i], whole, *split[j:]))
        return list(dict.fromkeys(found))

    def redefines(self, i: int, short: str, meanings: Collection[tuple[str, ...]]) -> bool:
        """Does paper ``i`` define the acronym ``short`` as something else than ``meanings`` (its
        expansions' tokens)? "Multi-party computation (MPC)" makes its later "MPC" no model
        predictive control."""
        found = self._defined.get(i)
        if found is None:
            paper = self.papers[i]
            found = definitions([f"{paper.title}. {paper.abstract}"])
            remember(self._defined, i, found)
        forms = found.get(short, set())
        return bool(forms) and not forms & set(meanings)

    def naming(
        self,
        forms: Iterable[tuple[str, ...]],
        lead: bool = True,
        meanings: Collection[tuple[str, ...]] = (),
        acronyms: Collection[str] = (),
    ) -> np.ndarray:
        """Per paper: does its title (or, with ``lead``, its first abstract sentence) state one of the
        token sequences?

        A sequence that more than NAMING_SHARE of the reference papers state ("network",
        "generation", "image") names nothing: it says too little about what a paper is about. With
        ``meanings`` (the phrase's spelled-out forms), a one-word form is an acronym that does not
        count in a paper defining it as something else. The ``acronyms`` count only where the paper
        writes them in capitals ("NAS", "NeRF"; not the "Nas" of "NasNet").
        """
        out = np.zeros(self.size, dtype=bool)
        for form in forms:
            if self.share(form) > NAMING_SHARE:
                continue
            for i in self._docs_with_all(form).tolist():
                if meanings and len(form) == 1 and self.redefines(i, form[0], meanings):
                    continue
                if len(form) == 1 and form[0] in acronyms and not self.capitalised(i, form[0], lead):
                    continue
                out[i] |= bool(
                    count_phrase(self.titles[i], form) or (lead and count_phrase(self.leads[i], form))
                )
        return out

    def naming_apart(self, forms: Iterable[tuple[str, ...]]) -> np.ndarray:
        """Per paper: does its title hold both words of a two-word form, apart or in the other order?
        "Transformers on Molecular Graphs" names "graph transformers" loosely. A pair more than
        NAMING_SHARE of the reference titles hold names nothing."""
        out = np.zeros(self.size, dtype=bool)
        for form in (f for f in forms if len(f) == 2 and f[0] != f[1]):
            docs = [i for i in self._docs_with_all(form).tolist() if set(form) <= set(self.titles[i])]
            if self._title_share(docs) <= NAMING_SHARE:
                out[docs] = True
        return out

    def _title_share(self, docs: list[int]) -> float:
        """The share of the reference papers among ``docs``."""
        if not len(self.reference):
            return 0.0
        return len(np.intersect1d(np.array(docs, dtype=np.int64), self.reference)) / len(self.reference)

    def capitalised(self, i: int, short: str, lead: bool) -> bool:
        """Does paper ``i`` write the acronym ``short`` as one in its title (or first sentence)?"""
        paper = self.papers[i]
        text = f"{paper.title} {sentences(paper)[0]}" if lead else paper.title
        return acronym_mentions(text, short) > 0

    def share(self, form: tuple[str, ...]) -> float:
        """The share of the reference papers whose title or abstract states the token sequence."""
        if not len(self.reference):
            return 0.0
        docs = np.intersect1d(self._docs_with_all(form), self.reference)
        said = [i for i in docs.tolist() if count_phrase(self.titles[i] + self.abstracts[i], form)]
        return len(said) / len(self.reference)

    def _docs_with_all(self, terms: Sequence[str]) -> np.ndarray:
        ids = [self.terms.get(t) for t in terms]
        if not ids or None in ids:
            return np.zeros(0, dtype=np.int64)
        docs = [self.doc[self.indptr[i] : self.indptr[i + 1]] for i in ids if i is not None]
        out = docs[0]
        for more in docs[1:]:
            out = np.intersect1d(out, more, assume_unique=True)
        return out

    # ------------------------------------------------------------ TF-IDF

    def postings(self, cols: np.ndarray) -> Postings:
        """The TF-IDF weights of the papers at rows ``cols`` (ascending), numbered by position."""
        position = np.full(self.size, -1, dtype=np.int64)
        position[cols] = np.arange(len(cols))
        where = position[self.doc]
        keep = where >= 0
        term, col = self.term[keep], where[keep]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(term, minlength=len(self.terms)))])
        return Postings(indptr, col, self.value[keep], term * len(cols) + col, len(cols))

    def terms_of(self, text: str) -> np.ndarray:
        """A text's token ids; terms no paper has get ids past the papers' vocabulary."""
        found = self._text_terms.get(text)
        if found is None:
            ids = []
            for token, word in self._as_compounds(text):
                term = self.terms.get(token)
                term = self._unseen(token) if term is None else term
                self.surface.setdefault(term, word)
                ids.append(term)
            found = np.array(ids, dtype=np.int64)
            remember(self._text_terms, text, found)
        return found

    def _pairs_joined(self, tokens: Sequence[str]) -> list[str]:
        """The two-part compounds the tokens spell as a word pair, once per occurrence."""
        pairs = Counter(pairwise(tokens))
        joined = self._joined
        return [joined[pair] for pair, n in pairs.items() if pair in joined for _ in range(n)]

    def _as_compounds(self, text: str) -> list[tuple[str, str]]:
        """(token, word) pairs of a query text, a compound the papers hyphenate read as one word, as
        _count reads the papers: 'pre-training' (or 'pre training') asks for pre-training,
        not any 'training'; a compound of three parts or more when it is hyphenated."""
        pieces: list[tuple[str, str]] = []
        for piece in text.split():
            long = [w for w, parts in compounds(piece) if len(parts) > 2 and w in self.terms]
            pieces += [(w, piece.strip(",.;:()")) for w in long] or tokens_as_written(piece)
        out: list[tuple[str, str]] = []
        i = 0
        while i < len(pieces):
            whole = self._joined.get((pieces[i][0], pieces[i + 1][0])) if i + 1 < len(pieces) else None
            if whole:
                out.append((whole, _as_written(text, [pieces[i][1], pieces[i + 1][1]])))
            else:
                out.append(pieces[i])
            i += 2 if whole else 1
        return out

    def _unseen(self, term: str) -> int:
        return len(self.terms) + self._extra.setdefault(term, len(self._extra))

    def queries(self, texts: Sequence[str], parts: np.ndarray) -> QueryBatch:
        """One query per row of ``parts`` (ids into ``texts``, -1 padded), the parts' words pooled.

        Each distinct text is tokenised once; the rows are assembled with array operations.
        """
        used = np.unique(parts[parts >= 0])
        tokens_of = [self.terms_of(texts[i]) for i in used.tolist()]
        length = np.zeros(len(texts), dtype=np.int64)
        length[used] = [len(t) for t in tokens_of]
        start = np.zeros(len(texts), dtype=np.int64)
        start[used] = np.cumsum(length[used]) - length[used]
        owner_of_part, column = np.nonzero(parts >= 0)
        part = parts[owner_of_part, column]
        flat = ragged_arange(start[part], length[part])
        pooled = np.concatenate(tokens_of) if tokens_of else np.zeros(0, dtype=np.int64)
        return self._weigh(np.repeat(owner_of_part, length[part]), pooled[flat], len(parts))

    def _weigh(self, owner: np.ndarray, term: np.ndarray, size: int) -> QueryBatch:
        span = len(self.terms) + len(self._extra) + 1
        keys, counts = np.unique(owner * span + term, return_counts=True)
        owner, term = keys // span, keys % span
        known = term < len(self.terms)
        idf = np.where(known, self.idf[np.where(known, term, 0)] if self.terms else 0.0, self.unseen_idf)
        weight = (1.0 + np.log(counts)) * idf
        norm = np.sqrt(np.bincount(owner, weights=weight * weight, minlength=size))
        weight = weight / np.maximum(norm, 1e-6)[owner]
        return QueryBatch(owner[known], term[known], weight[known].astype(np.float32), size)

    def cosine(self, queries: QueryBatch, postings: Postings) -> np.ndarray:
        """(queries, width) TF-IDF cosine of each query with each chosen paper.

        Terms that many queries share and many papers contain go through one dense matrix product;
        the rest are summed entry by entry from the postings.
        """
        df = df_of(postings, queries.term)
        uses = np.bincount(queries.term, minlength=len(postings.indptr) - 1)[queries.term]
        dense = uses * df > DENSE_WORK * queries.size * postings.width
        out = self._sparse_cosine(queries, postings, ~dense, df)
        if dense.any():
            out += self._dense_cosine(queries, postings, dense)
        return out

    def _sparse_cosine(
        self, queries: QueryBatch, postings: Postings, keep: np.ndarray, df: np.ndarray
    ) -> np.ndarray:
        start, count = postings.indptr[queries.term[keep]], df[keep]
        flat = ragged_arange(start, count)
        owner = np.repeat(queries.owner[keep], count)
        weight = np.repeat(queries.weight[keep], count) * postings.values[flat]
        cells = owner * postings.width + postings.cols[flat]
        total = np.bincount(cells, weights=weight, minlength=queries.size * postings.width)
        return total.reshape(queries.size, postings.width).astype(np.float32)

    def _dense_cosine(self, queries: QueryBatch, postings: Postings, keep: np.ndarray) -> np.ndarray:
        terms, column = numbered(queries.term[keep])
        weights = np.zeros((queries.size, len(terms)), dtype=np.float32)
        weights[queries.owner[keep], column] = queries.weight[keep]
        return weights @ dense_rows(postings, terms)

    def top_terms(
        self, queries: QueryBatch, postings: Postings, owners: np.ndarray, cols: np.ndarray, limit: int = 3
    ) -> np.ndarray:
        """(pairs, limit) ids of the query terms adding most to each (owner, column) cosine, -1 padded."""
        start, count = queries.entries_of(owners)
        flat = ragged_arange(start, count)
        pair = np.repeat(np.arange(len(owners)), count)
        terms, row = numbered(queries.term[flat])
        contrib = queries.weight[flat] * dense_rows(postings, terms)[row, np.repeat(cols, count)]
        slot = flat - np.repeat(start, count)
        table = np.zeros((len(owners), max(int(count.max(initial=0)), limit)), dtype=np.float32)
        table[pair, slot] = contrib
        ids = np.full(table.shape, -1, dtype=np.int64)
        ids[pair, slot] = queries.term[flat]
        top = np.argpartition(-table, limit - 1, axis=1)[:, :limit]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(table, top, axis=1), axis=1), axis=1)
        return np.where(np.take_along_axis(table, top, axis=1) > 0, np.take_along_axis(ids, top, axis=1), -1)

    def word(self, term: int) -> str:
        """A term as a profile wrote it (else its stem)."""
        return self.surface.get(term) or self.names[term]


def _as_written(text: str, words: Sequence[str]) -> str:
    """The words as the text joins them ('pre-training', 'pre training')."""
    found = re.search(r"[\s-]*".join(re.escape(w) for w in words), text)
    return found.group() if found else " ".join(words)


def numbered(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct ids ascending, each id's position among them): np.unique's inverse without a sort."""
    if not len(ids):
        return ids, ids
    seen = np.zeros(int(ids.max()) + 1, dtype=bool)
    seen[ids] = True
    distinct = np.flatnonzero(seen)
    position = np.cumsum(seen) - 1
    return distinct, position[ids]


def dense_rows(postings: Postings, terms: np.ndarray) -> np.ndarray:
    """(terms, width) TF-IDF weights of the given terms as dense rows."""
    rows = np.zeros((len(terms), postings.width), dtype=np.float32)
    count = df_of(postings, terms)
    flat = ragged_arange(postings.indptr[terms], count)
    rows[np.repeat(np.arange(len(terms)), count), postings.cols[flat]] = postings.values[flat]
    return rows


def df_of(postings: Postings, terms: np.ndarray) -> np.ndarray:
    """How many of the chosen papers contain each term."""
    return postings.indptr[terms + 1] - postings.indptr[terms]


def remember(memo: dict[Any, Any], key: object, value: object) -> None:
    """memo[key] = value, emptying the memo first when it is full."""
    if len(memo) >= MEMO_LIMIT:
        memo.clear()
    memo[key] = value


def strongest(queries: QueryBatch, n: int) -> QueryBatch:
    """Each query cut to its ``n`` heaviest terms (as MoreLikeThis keeps 25), normalised again."""
    order = np.lexsort((-queries.weight, queries.owner))
    owner = queries.owner[order]
    first = np.searchsorted(owner, owner, side="left")
    keep = order[np.arange(len(order)) - first < n]
    keep.sort()  # entries stay grouped by owner, terms ascending
    owner, term, weight = queries.owner[keep], queries.term[keep], queries.weight[keep].astype(np.float64)
    norm = np.sqrt(np.bincount(owner, weights=weight * weight, minlength=queries.size))
    return QueryBatch(owner, term, (weight / np.maximum(norm, 1e-12)[owner]).astype(np.float32), queries.size)


def blended(base: QueryBatch, extra: QueryBatch, weight: float) -> QueryBatch:
    """Each query of ``base`` plus ``weight`` times the same query of ``extra``, normalised again.

    A base query is a unit vector before its words that no paper has are dropped (they still lower
    its cosines); the sum is normalised with that share kept, so a query without ``extra`` entries
    is left exactly as it was."""
    span = int(max(base.term.max(initial=0), extra.term.max(initial=0))) + 1
    keys = np.concatenate([base.owner * span + base.term, extra.owner * span + extra.term])
    values = np.concatenate([base.weight, weight * extra.weight]).astype(np.float64)
    unique, inverse = np.unique(keys, return_inverse=True)
    summed = np.bincount(inverse, weights=values)
    owner, term = unique // span, unique % span
    known = np.bincount(base.owner, weights=base.weight.astype(np.float64) ** 2, minlength=base.size)
    total = np.bincount(owner, weights=summed * summed, minlength=base.size) + np.clip(1 - known, 0, 1)
    norm = np.where(np.isin(np.arange(base.size), extra.owner), np.sqrt(total), 1.0)
    return QueryBatch(owner, term, (summed / norm[owner]).astype(np.float32), base.size, with_extra=True)
