"""Text to features: a tf-idf featuriser fitted on the training split, saved as plain data.

scikit-learn does the tokenising and counting (``TfidfVectorizer``, or ``HashingVectorizer``
+ ``TfidfTransformer`` for vocabularies that do not fit in memory); this module only fixes
the settings (the ``features`` config section), returns CSR float32 ``(N, D)``, and turns the
fitted state into plain data: the settings dict, the vocabulary as a list of strings (column
order) and the idf weights as a tensor. :meth:`TextFeaturizer.from_state` rebuilds a
vectorizer whose output equals the fitted one's, so a checkpoint never holds a pickled object
and loads with ``torch.load(weights_only=True)``. A saved word-level vocabulary (the default) is
rebuilt as :class:`WordTfidf`, scikit-learn's word tf-idf transform in plain Python and numpy, so
``python -m xmlc.predict`` does not import scikit-learn (about 1 s of a 2-3 s call).

Rows are not normalised here (``norm=None``); ``data.normalize`` (l2 by default) scales them
afterwards, as it does for every input format.

Example:
    >>> from xmlc.config import FeaturesConfig
    >>> feat, X = TextFeaturizer.fit(["the cat sat", "the dog sat"], FeaturesConfig(min_df=1))
    >>> X.shape, feat.num_features
    ((2, 8), 8)
    >>> again = TextFeaturizer.from_state(feat.state_dict())
    >>> (again.transform(["a cat"]) != feat.transform(["a cat"])).nnz
    0
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["TextFeaturizer", "WordTfidf", "vocabulary_terms", "featurizer_settings", "HASHING_FEATURES"]

_SETTINGS = ("method", "analyzer", "ngram_range", "min_df", "max_features")
#: Hashed columns when ``max_features`` is None.
HASHING_FEATURES = 2 ** 18
# Settings the config does not expose; an object passed to :meth:`TextFeaturizer.fit` may still
# carry them as attributes (library use), and a saved featuriser keeps them all.
_FIXED = {"max_df": 1.0, "sublinear_tf": True, "lowercase": True, "token_pattern": r"(?u)\b\w\w+\b"}


def featurizer_settings(fcfg) -> dict:
    """The ``features`` config section as a plain dict, checked (errors name the key); the
    settings it lacks take the values of ``_FIXED``."""
    s = {k: getattr(fcfg, k) for k in _SETTINGS} | {k: getattr(fcfg, k, v) for k, v in _FIXED.items()}
    s["ngram_range"] = list(s["ngram_range"])
    lo_hi = s["ngram_range"]
    if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1]:
        raise ValueError(f"config key 'features.ngram_range' must be [min_n, max_n] with 1 <= min_n <= max_n; "
                         f"got {lo_hi!r}")
    for key in ("min_df", "max_df"):
        v = s[key]
        if isinstance(v, float) and not 0.0 <= v <= 1.0:
            raise ValueError(f"config key 'features.{key}' as a float is a fraction of documents in [0, 1]; got {v!r}")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"config key 'features.{key}' as an integer is a document count >= 1; got {v!r}")
    if s["max_features"] is not None and s["max_features"] < 1:
        raise ValueError(f"config key 'features.max_features' must be >= 1 or null; got {s['max_features']!r}")
    # the hashed columns: max_features (a library caller's own hashing_features attribute first)
    s["hashing_features"] = getattr(fcfg, "hashing_features", None) or s["max_features"] or HASHING_FEATURES
    if s["method"] not in ("tfidf", "hashing"):
        raise ValueError(f"config key 'features.method' must be 'tfidf' or 'hashing'; got {s['method']!r}")
    return s


def _common(s: dict) -> dict:
    return dict(analyzer=s["analyzer"], ngram_range=tuple(s["ngram_range"]), lowercase=s["lowercase"],
                token_pattern=s["token_pattern"] if s["analyzer"] == "word" else None, dtype=np.float32)


class TextFeaturizer:
    """A fitted tf-idf featuriser; build it with :meth:`fit` or :meth:`from_state`.

    Attributes:
        settings: the plain settings dict (:func:`featurizer_settings`).
        num_features: ``D``, the number of output columns.
    """

    def __init__(self, settings: dict, vectorizer, transformer=None):
        self.settings = settings
        self._vectorizer = vectorizer      # TfidfVectorizer, or HashingVectorizer (+ transformer)
        self._transformer = transformer

    @property
    def num_features(self) -> int:
        if self.settings["method"] == "hashing":
            return int(self.settings["hashing_features"])
        return len(self._vectorizer.vocabulary_)

    @classmethod
    def fit(cls, texts: Sequence[str], fcfg) -> tuple["TextFeaturizer", sp.csr_matrix]:
        """Fit on the training texts; returns the featuriser and their features CSR ``(N, D)`` float32."""
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer

        s = featurizer_settings(fcfg)
        if s["method"] == "hashing":
            vec = HashingVectorizer(n_features=s["hashing_features"], alternate_sign=False, norm=None, **_common(s))
            tf = TfidfTransformer(norm=None, sublinear_tf=s["sublinear_tf"])
            X = tf.fit_transform(vec.transform(texts))
            feat = cls(s, vec, tf)
        else:
            vec = TfidfVectorizer(min_df=s["min_df"], max_df=s["max_df"], max_features=s["max_features"],
                                  sublinear_tf=s["sublinear_tf"], norm=None, **_common(s))
            try:
                X = vec.fit_transform(texts)
            except ValueError as exc:   # e.g. "empty vocabulary" or "max_df corresponds to < documents than min_df"
                raise ValueError(f"features: cannot build a vocabulary from the training texts ({exc}); "
                                 f"check features.min_df / max_features") from None
            vec.stop_words_ = None     # the pruned terms: only informational, can be large
            feat = cls(s, vec)
        return feat, _csr32(X)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Features of ``texts``: CSR ``(N, D)`` float32 (unknown words are ignored)."""
        if self._transformer is not None:
            return _csr32(self._transformer.transform(self._vectorizer.transform(texts)))
        return _csr32(self._vectorizer.transform(texts))

    def state_dict(self) -> dict:
        """Plain data: ``{"settings": dict, "vocabulary": str | None, "idf": float64 tensor (D,)}``;
        the vocabulary's terms in column order joined by ``"\\0"`` (one string loads in
        milliseconds where a list of 10^5 strings takes the weights-only unpickler ~0.4 s; a list
        if a term holds a NUL)."""
        if self._transformer is not None:
            return {"settings": dict(self.settings), "vocabulary": None,
                    "idf": torch.from_numpy(np.asarray(self._transformer.idf_, dtype=np.float64).copy())}
        vocab = np.empty(len(self._vectorizer.vocabulary_), dtype=object)
        for term, j in self._vectorizer.vocabulary_.items():
            vocab[j] = term
        terms = vocab.tolist()
        return {"settings": dict(self.settings), "vocabulary": terms if any("\0" in t for t in terms) else "\0".join(terms),
                "idf": torch.from_numpy(np.asarray(self._vectorizer.idf_, dtype=np.float64).copy())}

    @classmethod
    def from_state(cls, state: dict) -> "TextFeaturizer":
        """Rebuild from :meth:`state_dict` output (no pickle: settings, word list, idf array)."""
        s = dict(state["settings"])
        idf = np.asarray(state["idf"].numpy() if isinstance(state["idf"], torch.Tensor) else state["idf"],
                         dtype=np.float64)
        vocab = vocabulary_terms(state)
        if s["method"] != "hashing" and s["analyzer"] == "word":
            if len(vocab) != idf.shape[0]:
                raise ValueError(f"featuriser state: {len(vocab)} vocabulary terms but {idf.shape[0]} idf weights")
            return cls(s, WordTfidf(s, vocab, idf))
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer

        if s["method"] == "hashing":
            vec = HashingVectorizer(n_features=s["hashing_features"], alternate_sign=False, norm=None, **_common(s))
            tf = TfidfTransformer(norm=None, sublinear_tf=s["sublinear_tf"])
            tf.idf_ = idf
            return cls(s, vec, tf)
        if len(vocab) != idf.shape[0]:
            raise ValueError(f"featuriser state: {len(vocab)} vocabulary terms but {idf.shape[0]} idf weights")
        vec = TfidfVectorizer(vocabulary=vocab, sublinear_tf=s["sublinear_tf"], norm=None, **_common(s))
        vec.idf_ = idf.astype(np.float32)
        return cls(s, vec)


def vocabulary_terms(state: dict) -> list[str] | None:
    """The terms of a saved featuriser's vocabulary in column order (None for hashing): a string
    of terms joined by ``"\\0"`` (:meth:`TextFeaturizer.state_dict`), or a list (older runs)."""
    vocab = state["vocabulary"]
    if vocab is None:
        return None
    if isinstance(vocab, str):
        return vocab.split("\0") if vocab else []
    return list(vocab)


class WordTfidf:
    r"""``TfidfVectorizer(analyzer="word", vocabulary=..., norm=None).transform`` of scikit-learn,
    without it: the same tokens (lowercased, ``token_pattern``, n-grams joined by a space,
    unigrams first), counts of the vocabulary's terms, ``1 + log(count)`` when ``sublinear_tf``,
    times the idf, all in float32 as scikit-learn computes them (tests: equal entry for entry).

    >>> w = WordTfidf({"token_pattern": r"(?u)\b\w\w+\b", "lowercase": True, "ngram_range": [1, 2],
    ...                "sublinear_tf": False}, ["cat", "the cat"], np.array([1.0, 2.0]))
    >>> w.transform(["The cat saw the cat"]).toarray()
    array([[2., 4.]], dtype=float32)
    """

    def __init__(self, settings: dict, vocabulary: Sequence[str], idf: np.ndarray):
        self.vocabulary_ = {term: j for j, term in enumerate(vocabulary)}
        self.idf_ = np.asarray(idf, dtype=np.float32)
        self._tokens = re.compile(settings["token_pattern"]).findall
        self._lowercase = bool(settings["lowercase"])
        self._min_n, self._max_n = settings["ngram_range"]
        self._sublinear = bool(settings["sublinear_tf"])

    def terms(self, doc: str) -> list[str]:
        """The document's terms, in scikit-learn's order (its word analyzer)."""
        tokens = self._tokens(doc.lower() if self._lowercase else doc)
        terms = list(tokens) if self._min_n == 1 else []
        for n in range(max(self._min_n, 2), min(self._max_n, len(tokens)) + 1):
            terms += [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        return terms

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        if isinstance(texts, str):
            raise ValueError("texts must be a sequence of strings, not one string")
        index, indptr, indices, counts = self.vocabulary_, [0], [], []
        for i, doc in enumerate(texts):
            if not isinstance(doc, str):
                raise ValueError(f"text {i} is a {type(doc).__name__}, expected a string")
            found = Counter(j for j in map(index.get, self.terms(doc)) if j is not None)
            indices += found.keys()
            counts += found.values()
            indptr.append(len(indices))
        data = np.asarray(counts, dtype=np.float32)
        cols = np.asarray(indices, dtype=np.int64)
        if self._sublinear:
            np.log(data, out=data)
            data += 1.0
        data *= self.idf_[cols]
        return sp.csr_matrix((data, cols, np.asarray(indptr, dtype=np.int64)), shape=(len(indptr) - 1, len(index)))


def _csr32(X) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float32)
    X.sort_indices()
    return X
