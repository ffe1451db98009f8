"""Does a paper *name* an interest? Its title or first abstract sentence states the phrase, its acronym
or expansion, or a close variant (plural, hyphenation, "visual" for "vision", a family name inside a
compound such as "NeRF" in "PointNeRF"); or names it loosely: without a leading domain word
("visual") or a trailing kind word ("models").

A paper that names an interest is relevant unless excluded (or, when the ranker gates it, unless it
is plainly about another subject). Acronyms come from a small general table of ML acronyms and from
the papers themselves: "large language model (LLM)" in any prepared paper defines LLM.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from newsletter.rank.text import STOPWORDS, acronym, dimensions, phrase_tokens

# Common machine-learning acronyms and what they stand for (general, not any profile's words).
ML_ACRONYMS = {
    "ai": "artificial intelligence",
    "asr": "automatic speech recognition",
    "cnn": "convolutional neural network",
    "cot": "chain of thought",
    "cv": "computer vision",
    "dpo": "direct preference optimization",
    "gan": "generative adversarial network",
    "gnn": "graph neural network",
    "gpu": "graphics processing unit",
    "kd": "knowledge distillation",
    "kg": "knowledge graph",
    "llm": "large language model",
    "lm": "language model",
    "lmm": "large multimodal model",
    "lora": "low rank adaptation",
    "lstm": "long short term memory",
    "mae": "masked autoencoder",
    "mllm": "multimodal large language model",
    "ml": "machine learning",
    "mlp": "multilayer perceptron",
    "moe": "mixture of experts",
    "nas": "neural architecture search",
    "nerf": "neural radiance field",
    "nlp": "natural language processing",
    "ocr": "optical character recognition",
    "peft": "parameter efficient fine tuning",
    "ppo": "proximal policy optimization",
    "rag": "retrieval augmented generation",
    "rl": "reinforcement learning",
    "rlhf": "reinforcement learning from human feedback",
    "rnn": "recurrent neural network",
    "sae": "sparse autoencoder",
    "sft": "supervised fine tuning",
    "sgd": "stochastic gradient descent",
    "ssl": "self supervised learning",
    "ssm": "state space model",
    "tts": "text to speech",
    "vae": "variational autoencoder",
    "vit": "vision transformer",
    "vla": "vision language action",
    "vlm": "vision language model",
    "vqa": "visual question answering",
}
# Leading words that narrow a phrase to a domain: "video object segmentation" is named by a title
# saying "object segmentation" (the paper is then checked to be close to the profile).
DOMAIN_WORDS = frozenset(
    phrase_tokens("vision visual video image 3d point cloud graph multimodal language text speech audio")
)
# Trailing words that only say what kind of thing a phrase is: "neural radiance field models" is named by
# "Neural Radiance Fields for ..." (again checked against the profile).
KIND_WORDS = frozenset(phrase_tokens("model network method framework architecture system"))
# The words before "(LLM)" start at the start of a word and take each word whole (possessive): tried from
# every letter, a paper with one long word (an identifier, a pasted blob) took quadratic time, 54 s a run
# for 60,000 letters, and every text cost 6 times what it needs to.
_DEFINED = re.compile(r"((?:(?<!\w)[A-Za-z]\w*+[\s-]+){1,8})\(([A-Z][A-Za-z]*[A-Z]s?)\)")
_BARE = re.compile(r"[A-Za-z]*[A-Z][A-Za-z]*[A-Z][A-Za-z]*")  # one word with two capitals: "NeRF", "GNNs"


def definitions(texts: Iterable[str]) -> dict[str, set[tuple[str, ...]]]:
    """Acronyms the texts define ("... large language models (LLMs) ...") -> their expansions' tokens."""
    return {short: {phrase_tokens(e) for e in counts} for short, counts in written_definitions(texts).items()}


def written_definitions(texts: Iterable[str]) -> dict[str, Counter[str]]:
    """Acronyms the texts define -> how often each expansion (lower case, as written) defines it."""
    found: dict[str, Counter[str]] = {}
    for text in texts:
        for before, short in _DEFINED.findall(text):
            letters = short.removesuffix("s").lower()
            words = [w for w in re.split(r"[\s-]+", before.strip()) if w]
            expansion = _expansion(words, letters) or _expansion(_without_kind(words), letters)
            if expansion:
                found.setdefault(letters, Counter())[" ".join(expansion).lower()] += 1
    return found


def _without_kind(words: Sequence[str]) -> list[str]:
    """The words without a trailing kind word: "spiking neural network models (SNNs)" spells SNN."""
    last = phrase_tokens(words[-1]) if words else ()
    return list(words[:-1]) if len(last) == 1 and last[0] in KIND_WORDS else []


def _expansion(words: Sequence[str], letters: str) -> list[str] | None:
    """The last words before an acronym whose initials (stop words optional) spell it, if any."""
    for n in range(len(letters), min(len(words), len(letters) + 3) + 1):
        tail = words[-n:]
        content = [w for w in tail if w.lower() not in STOPWORDS]
        if tail[0].lower() in STOPWORDS:
            continue
        for group in (tail, content):
            if "".join(w[0].lower() for w in group) == letters:
                return list(tail)
    return None


class Acronyms:
    """The general table plus the definitions found in the prepared papers."""

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self.expansions: dict[str, set[tuple[str, ...]]] = {
            k: {phrase_tokens(v)} for k, v in ML_ACRONYMS.items()
        }
        defined = written_definitions(texts)
        for short, counts in defined.items():
            self.expansions.setdefault(short, set()).update(phrase_tokens(e) for e in counts)
        self._meaning = {short: _commonest(counts) for short, counts in defined.items()}
        self._meaning.update(ML_ACRONYMS)
        self.shorts: dict[tuple[str, ...], set[str]] = {}
        for short, forms in self.expansions.items():
            for form in forms:
                self.shorts.setdefault(form, set()).add(short)

    def spelled(self, phrase: str) -> str:
        """A phrase that is one acronym, with what it stands for: "FNO (Fourier neural
        operator)". A sentence model reads the words far better than the letters of a
        recent acronym. The table's meaning first, else the one the papers define most often; any
        other phrase as it is."""
        meaning = self.meaning(phrase)
        return f"{phrase.strip()} ({meaning})" if meaning else phrase

    def meaning(self, phrase: str) -> str | None:
        """What a phrase that is one acronym stands for (see :meth:`spelled`); None for any other."""
        if not _BARE.fullmatch(phrase.strip()):
            return None
        return self._meaning.get(phrase.strip().removesuffix("s").lower())

    def stated_by(self, term: str) -> list[str]:
        """Other phrases that state a short term: what an acronym stands for ("reinforcement learning"
        for "RL"), the words of a number of dimensions ("three dimensional" for "3D")."""
        return [phrase for phrase in (self.meaning(term), dimensions(term)) if phrase]

    def forms(self, phrase: str) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
        """(strong, weak) token sequences that name ``phrase``; weak ones drop a leading domain word."""
        words = phrase_tokens(phrase)
        strong = {words} if words else set()
        short = acronym(phrase)
        if short:
            strong.add((short,))
        strong |= {(s,) for s in self._shorts_of(words)}
        for i, word in enumerate(words):  # an acronym inside the phrase, spelled out
            for expansion in self.expansions.get(word, ()):
                strong.add((*words[:i], *expansion, *words[i + 1 :]))
        weak = {form[1:] for form in strong if len(form) > 1 and form[0] in DOMAIN_WORDS}
        weak |= {form[:-1] for form in strong | weak if len(form) > 2 and form[-1] in KIND_WORDS}
        return strong, weak - strong

    def _shorts_of(self, words: tuple[str, ...]) -> set[str]:
        """The phrase's acronyms, also without a trailing kind word ("vision language action models" is
        a VLA, as "large language models" are LLMs)."""
        found = set(self.shorts.get(words, ()))
        if len(words) > 2 and words[-1] in KIND_WORDS:
            found |= self.shorts.get(words[:-1], set())
        return found


def _commonest(counts: Counter[str]) -> str | None:
    """The expansion defined most often; None when two tie (the acronym is ambiguous)."""
    top = counts.most_common(2)
    return top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else None
