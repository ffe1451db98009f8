"""A small synthetic corpus for the ranker tests (deliberately unrelated to the dev judgments)."""

from __future__ import annotations

from datetime import UTC, datetime

from newsletter.models import StoredPaper, Subscriber, normalize_title

CORPUS: list[tuple[str, str]] = [
    (
        "Surface Codes with Fewer Qubits for Quantum Error Correction",
        "We present a surface code layout for quantum error correction that halves the number of physical "
        "qubits. Quantum error correction thresholds are estimated with circuit-level noise simulations.",
    ),
    (
        "Protein Folding with Equivariant Transformers",
        "Protein folding is predicted from amino acid sequences with an equivariant transformer. "
        "Predicted protein structures match crystallography within two angstroms.",
    ),
    (
        "Graph Neural Networks for Molecule Property Prediction",
        "Graph neural networks read molecules as graphs of atoms and bonds. Our molecule encoder "
        "predicts solubility and toxicity of molecules better than fingerprints.",
    ),
    (
        "Graph Neural Networks for Urban Traffic Prediction",
        "We model road networks with graph neural networks to forecast traffic speed. The graph "
        "neural network captures congestion spreading between intersections.",
    ),
    (
        "Robotic Grasping from Pixels with Reinforcement Learning",
        "A robot arm learns grasping of unseen household objects with reinforcement learning from "
        "camera pixels. Grasp success rises to ninety percent after one day of practice.",
    ),
    (
        "Dexterous Robot Hands Learn In-Hand Grasping Skills",
        "A five-finger robot hand learns in-hand manipulation and grasping of objects in simulation "
        "and transfers the grasping policy to a physical robot.",
    ),
    (
        "Speech Synthesis with Diffusion Vocoders",
        "A diffusion vocoder produces natural speech synthesis from mel spectrograms in real time.",
    ),
    (
        "Transcribing Spoken Audio into Text with a Streaming Transformer",
        "We convert spoken audio into written words as the person talks, with a streaming transformer "
        "that listens to microphone input and emits text with low latency and low word error rate.",
    ),
    (
        "Volumetric Cloud Rendering for Games",
        "Real-time rendering of volumetric clouds in game engines with ray marching and temporal reuse.",
    ),
    (
        "Carbon Accounting for Data Centers",
        "We measure the carbon emissions of data centers and propose scheduling jobs when the grid is green.",
    ),
    (
        "Federated Learning on Mobile Keyboards",
        "Federated learning trains next-word prediction on phones without uploading what users type.",
    ),
    (
        "Contrastive Pretraining for Satellite Imagery",
        "Self-supervised contrastive pretraining on satellite images improves crop type mapping.",
    ),
    (
        "Automated Theorem Proving with Language Models",
        "A language model proposes proof steps that a formal verifier checks, proving olympiad theorems.",
    ),
    (
        "Fairness Audits of Credit Scoring Models",
        "We audit credit scoring models for disparate impact across demographic groups.",
    ),
    (
        "Sparse Matrix Kernels on GPUs",
        "New sparse matrix multiplication kernels run twice as fast on GPUs for scientific computing.",
    ),
    (
        "Music Generation from Text Descriptions",
        "A model composes music clips from text descriptions of mood, instruments and tempo.",
    ),
    (
        "Weather Nowcasting with Radar Sequences",
        "Short-term precipitation nowcasting from radar image sequences with a recurrent convolutional model.",
    ),
    (
        "Code Completion with Retrieval over Repositories",
        "Retrieval of related functions from the repository improves code completion accuracy.",
    ),
    (
        "Legal Document Summarization",
        "We summarize long court decisions into short abstracts that lawyers rate as faithful.",
    ),
    (
        "Bird Species Recognition from Field Recordings",
        "Classifying bird species from field audio recordings captured by cheap outdoor sensors.",
    ),
    (
        "Compiler Autotuning with Bayesian Optimization",
        "Bayesian optimization picks compiler flags that speed up scientific programs.",
    ),
    (
        "Table Question Answering over Spreadsheets",
        "A model answers natural language questions over spreadsheet tables with formulas.",
    ),
]

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def paper(
    title: str, abstract: str, rank: int, times_seen: int = 1, arxiv_id: str | None = None
) -> StoredPaper:
    return StoredPaper(
        id=rank,
        key=arxiv_id or normalize_title(title),
        title=title,
        abstract=abstract,
        arxiv_id=arxiv_id,
        authors=(),
        first_seen=NOW,
        last_seen=NOW,
        first_dump_seq=1,
        times_seen=times_seen,
        best_rank=rank,
    )


def papers() -> list[StoredPaper]:
    return [paper(title, abstract, rank) for rank, (title, abstract) in enumerate(CORPUS, start=1)]


def subscriber(*interests: str, **fields: object) -> Subscriber:
    return Subscriber(email="reader@example.org", interests=interests, **fields)  # type: ignore[arg-type]


def by_title(ranked: list, title_start: str):  # type: ignore[no-untyped-def]
    return next(s for s in ranked if s.paper.title.startswith(title_start))


def test_corpus_keys_are_unique() -> None:
    keys = [p.key for p in papers()]
    assert len(set(keys)) == len(keys) == len(CORPUS)
