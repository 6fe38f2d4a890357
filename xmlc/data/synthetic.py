"""Synthetic multilabel data: power-law label frequencies, co-occurring labels, learnable
word-count features (:func:`synthetic`), and the named presets the trainer uses.

Generative story (vectorised; never builds a dense ``(N, L)``):

1. Label ``l`` has a marginal frequency ``p_l = max_freq * rank**-a`` (power law, ``a``
   solved so that the mean number of labels per example is ``mean_labels``), ranks
   shuffled over label ids, and belongs to one of ``K = num_topics`` topics.
2. Each example draws ``topics_per_example`` distinct topics. A label of one of its
   topics is positive with probability ``p_l (1 - label_noise) / c`` (``c`` the chance
   that an example has the topic; capped at 1), any other label with
   ``p_l * label_noise / (1 - c)``: labels of a topic co-occur, and marginals stay ~``p_l``.
   With ``topic_precision`` set, topics are *graded* instead: labels are grouped by
   frequency into ``K`` topics of equal size, topic ``k`` is present in an example with
   its own probability ``c_k`` (independently of the other topics, so an example has
   0, 1 or several), chosen so that a label of a present topic is positive with
   probability ~``topic_precision``. Rare labels then have rare, informative topics,
   as in real label hierarchies; with equally common topics (the default) a rare label
   is positive in only ~``p_l K / T`` of its topic's examples, which caps what any
   model can reach on it.
3. Features are word counts: each positive label emits ``Poisson(words_per_label)``
   words from its own ``signature_size`` words (drawn from its topic's vocabulary; from
   all ``D`` words with graded topics), plus ``Poisson(topic_words)`` words from the
   example's topics' vocabularies and ``Poisson(noise_words)`` background words (Zipf-like
   over all ``D``). Values are ``log1p(count)``, rows normalised with ``normalize``.

The label of an example is thus predictable from its topic words (coarse) and its labels'
signature words (fine, shared by other labels of the topic): learnable, but with label noise
and word sharing far from trivially so.

Example:
    >>> data = synthetic_preset("default")
    >>> data.features.shape, data.labels.shape
    ((20000, 2000), (20000, 500))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from xmlc.data.container import XMCData, normalize_rows

__all__ = ["synthetic", "SYNTHETIC_PRESETS", "synthetic_preset"]


def _power_law_frequencies(num_labels: int, mean_labels: float, max_freq: float) -> np.ndarray:
    """``p_r = max_freq * r**-a`` for ranks r = 1..L with ``a`` solved so ``sum(p) = mean_labels``."""
    if not 0 < mean_labels <= num_labels * max_freq:
        raise ValueError(
            f"mean_labels must be in (0, num_labels * max_freq] = (0, {num_labels * max_freq:g}], got {mean_labels}"
        )
    ranks = np.arange(1, num_labels + 1, dtype=np.float64)
    lo, hi = 0.0, 50.0
    for _ in range(100):  # sum(p) decreases in a: bisection
        a = (lo + hi) / 2
        if (max_freq * ranks**-a).sum() > mean_labels:
            lo = a
        else:
            hi = a
    return max_freq * ranks**-hi


def synthetic(num_examples: int, num_features: int, num_labels: int, mean_labels: float, *,
              seed: int = 0, max_freq: float = 0.2, topics_per_example: int = 2, num_topics: int | None = None,
              topic_precision: float | None = None, label_noise: float = 0.1, signature_size: int = 8,
              words_per_label: float = 0.5, topic_words: float = 10.0, noise_words: float = 10.0,
              normalize: str = "l2") -> XMCData:
    """Learnable multilabel data with power-law label frequencies and co-occurring labels
    (the generative story is in the module docstring).

    Args:
        num_examples: ``N``.
        num_features: ``D``.
        num_labels: ``L``.
        mean_labels: target mean number of positive labels per example.
        seed: everything is a deterministic function of the arguments and ``seed``.
        max_freq: frequency of the most frequent label.
        topics_per_example: topics per example.
        num_topics: default ``round(topics_per_example * (1 - label_noise) / max_freq)``
            (at least 2), the largest ``K`` for which the top label's probability stays <= 1;
            with ``topic_precision``, ``round(L / 100)`` (at least 2, at most ``L``).
        topic_precision: in ``(0, 1]``: graded topics, and ``topics_per_example`` is not
            used. None: ``topics_per_example`` equally common topics.
        label_noise: share of a label's positives that fall outside its topic.
        signature_size: words per label signature.
        words_per_label: mean words each positive label contributes.
        topic_words: mean topic words per example.
        noise_words: mean background words per example.
        normalize: row normalisation of the features, see ``normalize_rows``.

    Returns:
        ``XMCData`` with features ``(N, D)`` and labels ``(N, L)``.
    """
    N, D, L = int(num_examples), int(num_features), int(num_labels)
    if N < 1 or D < 2 or L < 1:
        raise ValueError(f"need num_examples >= 1, num_features >= 2, num_labels >= 1, got {N}, {D}, {L}")
    if not 0 <= label_noise < 1:
        raise ValueError(f"label_noise must be in [0, 1), got {label_noise}")
    rng = np.random.default_rng(seed)
    p = _power_law_frequencies(L, mean_labels, max_freq)[rng.permutation(L)]
    if topic_precision is None:
        topics = _equal_topics(rng, N, L, num_topics, topics_per_example, label_noise, max_freq)
    else:
        topics = _graded_topics(rng, p, N, L, num_topics, topic_precision, label_noise)
    labels = _draw_labels(rng, p, topics, N, label_noise)
    features = _draw_features(rng, labels, topics, D, signature_size, words_per_label, topic_words, noise_words)
    features = normalize_rows(features, normalize)
    features.sort_indices()
    return XMCData(features, labels, D, L)


@dataclass
class _Topics:
    """The topic structure: ``K`` topics, the topic of each label ``(L,)``, the chance that an
    example has each topic ``(K,)``, which examples have which ``(N, K)`` bool, and with equally
    common topics the ``T`` topics of each example ``(N, T)`` (None when graded)."""

    K: int
    topic_of_label: np.ndarray
    prevalence: np.ndarray
    in_topic: np.ndarray
    example_topics: np.ndarray | None = None
    T: int = 0


def _equal_topics(rng, N: int, L: int, num_topics, topics_per_example: int, label_noise: float,
                  max_freq: float) -> _Topics:
    """``T = topics_per_example`` distinct topics per example, each topic equally common."""
    K = num_topics if num_topics is not None else max(2, round(topics_per_example * (1 - label_noise) / max_freq))
    T = int(topics_per_example)
    if not 1 <= T <= K:
        raise ValueError(f"topics_per_example must be in [1, num_topics={K}], got {T}")
    prevalence = np.full(K, T / K)
    topic_of_label = rng.permutation(L) % K
    example_topics = np.argsort(rng.random((N, K)), axis=1)[:, :T]  # (N, T) distinct topics
    in_topic = np.zeros((N, K), dtype=bool)
    in_topic[np.arange(N)[:, None], example_topics] = True
    return _Topics(K, topic_of_label, prevalence, in_topic, example_topics, T)


def _graded_topics(rng, p: np.ndarray, N: int, L: int, num_topics, topic_precision: float,
                   label_noise: float) -> _Topics:
    """``K`` topics of labels of similar frequency, each present with its own probability."""
    if not 0 < topic_precision <= 1:
        raise ValueError(f"topic_precision must be in (0, 1], got {topic_precision}")
    K = num_topics if num_topics is not None else min(L, max(2, round(L / 100)))
    if not 1 <= K <= L:
        raise ValueError(f"num_topics must be in [1, num_labels={L}], got {K}")
    need = p * (1 - label_noise) / topic_precision  # the prevalence each label's topic needs
    topic_of_label = np.empty(L, dtype=np.int64)
    topic_of_label[np.argsort(need, kind="stable")] = np.arange(L) * K // L  # K groups of similar need
    log_mean = np.bincount(topic_of_label, np.log(need), K) / np.bincount(topic_of_label, minlength=K)
    top = np.zeros(K)
    np.maximum.at(top, topic_of_label, p * (1 - label_noise))
    prevalence = np.minimum(np.maximum(np.exp(log_mean), top), 0.9)  # q_in <= 1 in every topic
    in_topic = rng.random((N, K), dtype=np.float32) < prevalence.astype(np.float32)  # independent topics
    return _Topics(K, topic_of_label, prevalence, in_topic)


def _draw_labels(rng, p: np.ndarray, topics: _Topics, N: int, label_noise: float) -> sp.csr_matrix:
    """Labels CSR ``(N, L)``: Bernoulli ``q_in`` inside an example's topics, ``q_out`` outside."""
    L, topic_of_label = p.size, topics.topic_of_label
    c = topics.prevalence[topic_of_label]
    q_in = np.minimum(1.0, p * (1 - label_noise) / c).astype(np.float32)
    q_out = np.where(c < 1, p * label_noise / np.maximum(1 - c, 1e-12), 0.0)
    rows, cols = [], []
    for k in range(topics.K):  # a loop over topics (tens), each a vectorised Bernoulli block
        members = np.flatnonzero(topics.in_topic[:, k])
        labels_k = np.flatnonzero(topic_of_label == k)
        step = max(1, 4_000_000 // max(1, labels_k.size))
        for s in range(0, members.size, step):
            block = rng.random((min(step, members.size - s), labels_k.size), dtype=np.float32) < q_in[labels_k]
            r, l = np.nonzero(block)
            rows.append(members[s + r])
            cols.append(labels_k[l])
    out_counts = rng.binomial(N, np.minimum(q_out, 1.0))
    rows.append(rng.integers(0, N, out_counts.sum()))
    cols.append(np.repeat(np.arange(L), out_counts))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    labels = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(N, L))
    labels.sum_duplicates()
    labels.data[:] = 1.0
    labels.sort_indices()
    return labels


def _draw_features(rng, labels: sp.csr_matrix, topics: _Topics, D: int, signature_size: int,
                   words_per_label: float, topic_words: float, noise_words: float) -> sp.csr_matrix:
    """Features CSR ``(N, D)`` float32 ``log1p(count)``: signature, topic and background words."""
    (N, L), K, topic_of_label = labels.shape, topics.K, topics.topic_of_label
    # A vocabulary per topic (a partition of the words), signatures within it.
    vocab = rng.permutation(D)
    bounds = np.linspace(0, D, K + 1).astype(np.int64)
    sizes = np.diff(bounds)
    if topics.example_topics is not None:
        signature = vocab[bounds[topic_of_label][:, None] + (rng.random((L, signature_size)) * sizes[topic_of_label][:, None]).astype(np.int64)]
    else:  # a topic's ~D/K words cannot tell its ~L/K labels apart: signatures over all D words
        signature = rng.integers(0, D, (L, signature_size))
    label_rows = np.repeat(np.arange(N), np.diff(labels.indptr))
    emit = rng.poisson(words_per_label, labels.nnz)
    f_rows = [np.repeat(label_rows, emit)]
    f_cols = [signature[np.repeat(labels.indices, emit), rng.integers(0, signature_size, emit.sum())]]
    t_rows, t_topic = _topic_word_topics(rng, topics, N, topic_words)
    f_rows.append(t_rows)
    f_cols.append(vocab[bounds[t_topic] + (rng.random(t_rows.size) * sizes[t_topic]).astype(np.int64)])
    background = 1.0 / (np.arange(D) + 10.0)
    n_noise = rng.poisson(noise_words, N)
    f_rows.append(np.repeat(np.arange(N), n_noise))
    f_cols.append(rng.permutation(D)[rng.choice(D, n_noise.sum(), p=background / background.sum())])
    f_rows, f_cols = np.concatenate(f_rows), np.concatenate(f_cols)
    features = sp.csr_matrix((np.ones(f_rows.size, np.float32), (f_rows, f_cols)), shape=(N, D))
    features.sum_duplicates()
    features.data = np.log1p(features.data).astype(np.float32)
    return features


def _topic_word_topics(rng, topics: _Topics, N: int, topic_words: float) -> tuple[np.ndarray, np.ndarray]:
    """``Poisson(topic_words)`` topic words per example: the row and the topic of each word."""
    n_topic = rng.poisson(topic_words, N)
    if topics.example_topics is not None:
        t_rows = np.repeat(np.arange(N), n_topic)
        return t_rows, topics.example_topics[t_rows, rng.integers(0, topics.T, t_rows.size)]
    # Graded: each topic word from one of the example's topics, none without a topic.
    active_rows, active_topics = np.nonzero(topics.in_topic)
    n_active = np.bincount(active_rows, minlength=N)
    n_topic[n_active == 0] = 0
    t_rows = np.repeat(np.arange(N), n_topic)
    first = np.cumsum(n_active) - n_active
    return t_rows, active_topics[first[t_rows] + (rng.random(t_rows.size) * n_active[t_rows]).astype(np.int64)]


SYNTHETIC_PRESETS: dict[str, dict] = {
    # Small: 20k examples, 500 labels, ~5 labels per example; equally common topics.
    "default": dict(num_examples=20_000, num_features=2_000, num_labels=500, mean_labels=5.0, max_freq=0.25, words_per_label=2.0),
    # The seed scenario: 80k examples, 7,900 labels, ~130 labels per example, label
    # frequencies ~1%..15%; learnable but hard (moderate AUPRC, not 1.0). Graded topics: 200
    # topics of ~40 labels; a label is positive in ~70% of its topic's examples. Topics are
    # seen only through ~0.5 signature words per positive label and 3 topic words among 20
    # background words per example, so a model has to learn to detect them.
    "seed": dict(
        num_examples=80_000,
        num_features=5_000,
        num_labels=7_900,
        mean_labels=130.0,
        max_freq=0.15,
        topic_precision=0.7,
        num_topics=200,
        signature_size=4,
        words_per_label=0.5,
        topic_words=3.0,
        noise_words=20.0,
    ),
}


def synthetic_preset(name: str, *, seed: int = 0) -> XMCData:
    """``synthetic(**SYNTHETIC_PRESETS[name], seed=seed)``; ``name`` in ``SYNTHETIC_PRESETS``."""
    if name not in SYNTHETIC_PRESETS:
        raise ValueError(f"unknown synthetic preset {name!r}; valid: {sorted(SYNTHETIC_PRESETS)}")
    return synthetic(**SYNTHETIC_PRESETS[name], seed=seed)

