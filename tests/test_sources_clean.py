"""Cleaning LaTeX debris out of abstracts, and excerpts cut at sentence boundaries."""

from __future__ import annotations

import re

import pytest

from newsletter.sources import read_dump
from newsletter.sources.clean import clean_abstract, excerpt, split_sentences

from .conftest import SEEDS

# (raw snippet as it appears in the seeds, cleaned)
SEED_SNIPPETS = [
    (
        r"of deep learning models: (1) {\it determinism}: almost every linear region",
        "of deep learning models: (1) determinism: almost every linear region",
    ),
    (
        r"suggest that {\it normal neural networks well-trained for classification behave as hash encoders "
        r"without any extra efforts.} In addition,",
        "suggest that normal neural networks well-trained for classification behave as hash encoders "
        "without any extra efforts. In addition,",
    ),
    (
        r"{Further experiments demonstrate that {\it model size}, {\it training time}, {\it training sample "
        r"size}, {\it regularization}, and {\it label noise} contribute in shaping the encoding properties, "
        r"while the impacts of the first three are dominant.} We then define",
        "Further experiments demonstrate that model size, training time, training sample size, "
        "regularization, and label noise contribute in shaping the encoding properties, "
        "while the impacts of the first three are dominant. We then define",
    ),
    (
        r"$\textit{Labor Space}$: A Unifying Representation of the Labor Market via Large Language Models",
        "Labor Space: A Unifying Representation of the Labor Market via Large Language Models",
    ),
    (
        r"An interactive demo of SALMONN is available at \url{https://github.com/bytedance/SALMONN}, and",
        "An interactive demo of SALMONN is available at https://github.com/bytedance/SALMONN, and",
    ),
    (
        "our approach achieved 13.7times and 3.0times maximum batch size and sequence length",
        "our approach achieved 13.7× and 3.0× maximum batch size and sequence length",
    ),
    (
        "sparse networks outperform their dense equivalents by 1.3-2.4times -- equivalent to",
        "sparse networks outperform their dense equivalents by 1.3-2.4× -- equivalent to",
    ),
    (
        r"utilizing merely 4\%-20\% of the original post-training data.",
        "utilizing merely 4%-20% of the original post-training data.",
    ),
    (
        r"which follow a similar Embedding\&MLP paradigm.",
        "which follow a similar Embedding&MLP paradigm.",
    ),
    (
        r"applied in the union of remaining candidate regions (\ie, routed regions).",
        "applied in the union of remaining candidate regions (i.e., routed regions).",
    ),
    (
        r"However, na\"{\i}vely running the low-rank branch",
        "However, naïvely running the low-rank branch",
    ),
    (
        r"we go from O(d ell) na\"ively to O(d + ell).",
        "we go from O(d ell) naïvely to O(d + ell).",
    ),
    (r"swapping argmax with the Fr\'echet mean.", "swapping argmax with the Fréchet mean."),
    (
        r"\( x'(t) = Ax(t) + Bu(t), y(t) = Cx(t) + Du(t) \), and "
        r"showed that for appropriate choices of the state matrix \( A \), this system",
        "x'(t) = Ax(t) + Bu(t), y(t) = Cx(t) + Du(t), and "
        "showed that for appropriate choices of the state matrix A, this system",
    ),
    (
        "an excess risk of mathcal{O}(mathcal{C_Phi/m} + mathcal{C_Psi/n}) for downstream tasks",
        "an excess risk of O(C_Phi/m + C_Psi/n) for downstream tasks",
    ),
    (
        "a sample complexity of order mathcal{O}(Poly(S,A,H)/(varepsilon^2 N^{E})) in finite",
        "a sample complexity of order O(Poly(S,A,H)/(ε^2 N^E)) in finite",
    ),
    (
        "dependence is at least Omega(S^{1.5}) in the PAC sample complexity",
        "dependence is at least Omega(S^(1.5)) in the PAC sample complexity",
    ),
    (
        "where the sign(cdot) operator in Lion is replaced",
        "where the sign(·) operator in Lion is replaced",
    ),
    (
        "consistent improvements of {1.03%, 0.78%, 1.09%} on challenging reasoning tasks",
        "consistent improvements of 1.03%, 0.78%, 1.09% on challenging reasoning tasks",
    ),
    (
        "Code can be available at https://github.com/xuke225/EQ-Net.git{https://github.com/xuke225/EQ-Net}.",
        "Code can be available at https://github.com/xuke225/EQ-Net.",
    ),
    (
        "making it hard to reach~`Best of Both Worlds'. To overcome",
        "making it hard to reach ‘Best of Both Worlds’. To overcome",
    ),
    (
        "such as `Manufacturing--Healthcare'. Furthermore",
        "such as ‘Manufacturing--Healthcare’. Furthermore",
    ),
    (
        "from the perspective of ``activated tokens''. Our key insight",
        "from the perspective of “activated tokens”. Our key insight",
    ),
    (
        r"source codes will be available at~https://github.com/Med-Process",
        "source codes will be available at https://github.com/Med-Process",
    ),
    (
        r"a new image representation method called \sysname.",
        "a new image representation method called the proposed system.",
    ),
]

# Text that looks like debris but is not: it must come out unchanged.
KEPT_AS_IS = [
    "to elicit specific behavior (e.g., 'What happened {time}{place}?') -- we empirically identify",
    "obtain 65.03% verified error on CIFAR-10 (epsilon=8{255}) and 82.36% verified error",
    "FlashAttention computes attention using N^2d^2{M} I/O operations",
    "significant improvements over the current two-stage models (1% ~ 3% absolute performance gain",
    "in one case as much as ~10 BLEU points compared to baseline techniques",
    "gains of (~5%) over the baseline",
    "data at https://www.cs.toronto.edu/~kriz/cifar.html for",
    "a 7B model trained on 3.5T tokens costs $5 and $10 per run",
    "Spikformer V2: Join the High Accuracy Club on ImageNet with an SNN Ticket",
    "Foundation Models for Natural Language Processing -- Pre-trained Language Models Integrating Media",
    "it sometimes lacks precision and sometimes times out",
    "training is 3 times faster and uses 2 times less memory",
]


@pytest.mark.parametrize(("raw", "clean"), SEED_SNIPPETS)
def test_seed_debris_is_cleaned(raw: str, clean: str) -> None:
    assert clean_abstract(raw) == clean


def test_every_snippet_comes_from_a_seed() -> None:
    corpus = " ".join(
        f"{paper.title} {paper.abstract}" for path in SEEDS.glob("*.txt") for paper in read_dump(path).papers
    )
    for raw, _ in SEED_SNIPPETS:
        assert raw in corpus, raw


@pytest.mark.parametrize("text", KEPT_AS_IS)
def test_look_alikes_are_kept(text: str) -> None:
    assert clean_abstract(text) == text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (r"\emph{Kestrel} is \textit{fast}", "Kestrel is fast"),
        (r"the \textbf{Kestrel} model with selection", "the Kestrel model with selection"),
        (r"speedups of $3\times$ and $10 \times$ at $\alpha = 0.5$", "speedups of 3× and 10 × at α = 0.5"),
        (r"memory of $O(n^{2})$ and $\mathcal{O}(L \log L)$", "memory of O(n^2) and O(L log L)"),
        (r"a \href{https://example.org/page}{project page} and \href{https://x.org}{https://x.org}",
         "a project page (https://example.org/page) and https://x.org"),
        (r"ratio \frac{1}{2} with \# of steps \_ and a \$ sign", "ratio 1/2 with # of steps _ and a $ sign"),
        (r"curly \{braces\} stay, {\bf bold} goes", "curly {braces} stay, bold goes"),
        ("line\nbreaks   and\ttabs collapse ", "line breaks and tabs collapse"),
        (r"Pr\"{o}ve \c{c}a \~{n}o and G\"odel", "Pröve ça ño and Gödel"),
        (r"results ({\bf 91.2\%}) beat", "results (91.2%) beat"),
        (r"an unclosed {\it group", "an unclosed group"),
        ("", ""),
    ],
)  # fmt: skip
def test_general_latex_rules(raw: str, clean: str) -> None:
    assert clean_abstract(raw) == clean


def test_cleaning_seeds_is_idempotent_and_leaves_no_markup() -> None:
    for path in SEEDS.glob("*.txt"):
        for paper in read_dump(path).papers:
            once = clean_abstract(paper.abstract)
            assert clean_abstract(once) == once
            assert "\\" not in once
            assert "$" not in once
            assert not re.search(r"\d(?:times)\b", once)
            assert "\ue000" not in once and "\ue010" not in once


# --- excerpts ----------------------------------------------------------------------------------

LONG = (
    "Graph neural networks (GNNs), e.g. GCN and GAT, scale with the edges. "
    "Kipf et al. Showed this first on citation graphs. "
    "We train a 3.5T-token model on 8 GPUs. "
    "It is 5.3x faster than attention! "
    "Code is released."
)


def test_split_sentences_respects_abbreviations_and_numbers() -> None:
    assert split_sentences(LONG) == [
        "Graph neural networks (GNNs), e.g. GCN and GAT, scale with the edges.",
        "Kipf et al. Showed this first on citation graphs.",
        "We train a 3.5T-token model on 8 GPUs.",
        "It is 5.3x faster than attention!",
        "Code is released.",
    ]


def test_split_sentences_on_quotes_and_brackets() -> None:
    text = 'We call it "the trick." The rest (see Sec. 3) follows. (Ablations confirm it.) Done.'
    assert split_sentences(text) == [
        'We call it "the trick."',
        "The rest (see Sec. 3) follows.",
        "(Ablations confirm it.)",
        "Done.",
    ]


def test_excerpt_takes_up_to_three_sentences_and_marks_the_cut() -> None:
    result = excerpt(LONG)
    assert result == (
        "Graph neural networks (GNNs), e.g. GCN and GAT, scale with the edges. "
        "Kipf et al. Showed this first on citation graphs. "
        "We train a 3.5T-token model on 8 GPUs.\u00a0…"
    )


def test_excerpt_whole_text_has_no_ellipsis() -> None:
    assert excerpt("One sentence. Two sentences.") == "One sentence. Two sentences."


def test_excerpt_stops_before_max_chars() -> None:
    result = excerpt(LONG, max_sentences=3, max_chars=130)
    assert result == (
        "Graph neural networks (GNNs), e.g. GCN and GAT, scale with the edges. "
        "Kipf et al. Showed this first on citation graphs.\u00a0…"
    )
    assert len(result) <= 130


def test_excerpt_cuts_a_too_long_first_sentence_at_a_word() -> None:
    sentence = "This single sentence keeps going " + "and going " * 60 + "until it ends."
    result = excerpt(sentence, max_chars=100)
    assert len(result) <= 100
    assert result.endswith(("going…", "and…"))
    assert sentence.startswith(result[:-1])


def test_excerpt_marks_a_first_sentence_that_only_fits_without_the_marker() -> None:
    text = "A" * 99 + ". Second sentence."
    result = excerpt(text, max_chars=100)
    assert len(result) <= 100
    assert result.endswith("…")


def test_excerpt_cleans_first() -> None:
    assert (
        excerpt(r"We get 13.7times speedups. {\it Really}.", max_sentences=1)
        == "We get 13.7× speedups.\u00a0…"
    )


def test_excerpt_of_every_seed_abstract_is_short_and_ends_cleanly() -> None:
    for path in SEEDS.glob("*.txt"):
        for paper in read_dump(path).papers:
            result = excerpt(paper.abstract)
            assert 0 < len(result) <= 400
            assert result.endswith((".", "!", "?", "…")), result[-40:]
            assert result.rstrip("\u00a0…") in clean_abstract(paper.abstract)


def test_excerpt_of_empty_text() -> None:
    assert excerpt("") == ""


# Real abstracts from HF daily_papers API responses (the files in tests/data/realdata/ and its README).
REAL_SNIPPETS = [
    (  # 2509.21766: a \href{url}{label} whose backslash and first braces were lost upstream
        "in-context locking and functional\nfundamental capability gaps.\n"
        "https://github.com/StarDewXXX/UltraHorizon{Our code will be available\nhere.}",
        "in-context locking and functional fundamental capability gaps. "
        "Our code will be available here (https://github.com/StarDewXXX/UltraHorizon).",
    ),
    (  # 2608.14614: '\$22K' whose '$' was lost
        "At current market prices (\\22K for the DumpsterCluster vs. 600K for an 8-GPU B200 system),",
        "At current market prices (22K for the DumpsterCluster vs. 600K for an 8-GPU B200 system),",
    ),
    (  # 2512.02892: a spaced operator in math
        "heavily penalizes quality loss (QPS, γ{=}4), we show that SchED is robust",
        "heavily penalizes quality loss (QPS, γ=4), we show that SchED is robust",
    ),
]


@pytest.mark.parametrize(("raw", "cleaned"), REAL_SNIPPETS)
def test_real_api_abstracts_lose_their_latex_debris(raw: str, cleaned: str) -> None:
    assert clean_abstract(raw) == cleaned


def test_a_placeholder_macro_becomes_the_papers_name_or_says_what_it_stands_for() -> None:
    # 2410.18745 ("Why Does the Effective Context Length of LLMs Fall Short?"): no name in the title
    raw = "Compared to commercial models,\nLlama 3.1 70B with \\method even achieves better performance"
    title = "Why Does the Effective Context Length of LLMs Fall Short?"
    assert clean_abstract(raw, title) == (
        "Compared to commercial models, Llama 3.1 70B with the proposed method even achieves better performance"
    )
    named = clean_abstract(
        "We propose \\ours, which", "SPARK -- Sparse Propagation for Accurate Relational Knowledge"
    )
    assert named == "We propose SPARK, which"
    assert clean_abstract("\\sysname beats it", "Kestrel: Sparse Message Passing") == "Kestrel beats it"
    assert clean_abstract("see \\DumpsterCluster") == "see DumpsterCluster"  # other macros keep their name
