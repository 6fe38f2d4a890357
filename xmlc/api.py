"""A trained run from Python: texts (or a feature matrix) in, label names out.

Example::

    >>> import xmlc
    >>> clf = xmlc.load("runs/tickets")                   # a run directory (best.pt) or a .pt file
    >>> clf.predict(["printer on fire", "cannot log in"], top_k=3)
    [{'top_k': [('hardware', 0.91), ('urgent', 0.64), ('network', 0.08)], 'predicted': ['hardware', 'urgent']},
     {'top_k': [('account', 0.88), ...], 'predicted': ['account']}]
    >>> clf.scores(["printer on fire"]).shape           # (N, L) probabilities
    torch.Size([1, 12])

Everything comes from the checkpoint alone, loaded with ``torch.load(weights_only=True)``:
the model, the tf-idf featuriser rebuilt from plain data, the row normalisation, the label
names and the calibrated per-label thresholds (``predicted``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from xmlc.checkpoint import checkpoint_path
from xmlc.data import EVAL_BATCH_SIZE, XMCData, make_loader, normalize_rows
from xmlc.data.container import finite_float32
from xmlc.data.features import TextFeaturizer
from xmlc.inference import predict_scores
from xmlc.errors import InputError
from xmlc.run import RunArtifact

__all__ = ["Classifier", "load", "empty_rows"]


class Classifier:
    """A trained model with what it needs to take raw input; build it with :func:`load`
    (``source`` names the checkpoint in errors).

    Attributes:
        label_names: column ``j`` of the scores is ``label_names[j]`` (the index ``j`` itself
            for runs trained on XMC files without ``data.label_names``).
        thresholds: ``(L,)`` probability thresholds of ``predicted`` (calibrated, else 0.5).
        featurizer: the :class:`xmlc.data.features.TextFeaturizer` of a raw-text run, else None.
        config: the run's resolved :class:`xmlc.config.Config`.
        num_features: ``D``.
    """

    def __init__(self, run: RunArtifact, *, device: str | torch.device = "cpu", threshold: float | None = None,
                 source: str = "the checkpoint"):
        self.device = torch.device(device)
        self.model, self.config = run.build_model(self.device, source=source), run.config
        self.num_features, num_labels = run.num_features, run.num_labels
        names = run.label_names
        self.has_names = names is not None
        self.label_names = list(names) if names is not None else list(range(num_labels))
        self.featurizer = TextFeaturizer.from_state(run.featurizer) if run.featurizer is not None else None
        if threshold is not None:
            self.thresholds = torch.full((num_labels,), float(threshold))
        elif run.thresholds is not None:
            self.thresholds = run.thresholds.float().cpu()
        else:
            self.thresholds = torch.full((num_labels,), 0.5)
        self.calibrated = threshold is None and run.thresholds is not None

    def features(self, x) -> sp.csr_matrix | np.ndarray:
        """Model input for ``x``: a string or a list of strings (featurised), or an ``(N, D)``
        scipy sparse matrix / ndarray / tensor; rows normalised as in training.

        Raises:
            ValueError: text for a model trained on features (or the reverse), a matrix that is
                not 2-d or whose ``D`` is not the model's (both numbers named), a value that is
                not a finite float32 (NaN, inf, 1e40, None; row and column named).
        """
        if isinstance(x, str):
            x = [x]
        if isinstance(x, torch.Tensor):
            x = x.to_dense().cpu().numpy() if x.layout != torch.strided else x.cpu().float().numpy()
        if sp.issparse(x) or isinstance(x, np.ndarray):
            if x.ndim != 2:
                raise InputError(f"features must be a 2-d (N, D) matrix, got shape {tuple(x.shape)}"
                                 + (" (one row: x.reshape(1, -1))" if x.ndim == 1 else ""))
            if x.shape[1] != self.num_features:
                raise InputError(f"features have shape {tuple(x.shape)}: D={x.shape[1]:,} columns but the "
                                 f"model has D={self.num_features:,}")
            if self.featurizer is not None:
                raise InputError("the model was trained on raw text: give a list of strings, not a matrix")
            X = finite_float32(x, "features")
        else:
            texts = list(x)
            if not texts:   # nothing to score, whatever the model takes
                return sp.csr_matrix((0, self.num_features), dtype=np.float32)
            if not all(isinstance(t, str) for t in texts):
                raise InputError("give a string, a list of strings, or an (N, D) feature matrix")
            if self.featurizer is None:
                raise InputError(f"the model was trained on a feature matrix (D={self.num_features:,}); give "
                                 f"features, not text")
            X = self.featurizer.transform(texts)
        return normalize_rows(X, self.config.data.normalize)

    @torch.no_grad()
    def scores(self, x, *, batch_size: int | None = None) -> torch.Tensor:
        """Probabilities ``(N, L)`` float32 for ``x`` (see :meth:`features`)."""
        return self.scores_of_features(self.features(x), batch_size=batch_size)

    @torch.no_grad()
    def scores_of_features(self, X, *, batch_size: int | None = None) -> torch.Tensor:
        """Probabilities ``(N, L)`` for model input ``X`` as :meth:`features` returns it
        (``(N, D)``, already normalised)."""
        n = X.shape[0]
        if n == 0:
            return torch.empty((0, len(self.label_names)), dtype=torch.float32)
        data = XMCData(X, sp.csr_matrix((n, len(self.label_names)), dtype=np.float32), self.num_features,
                       len(self.label_names))
        loader = make_loader(data, batch_size or EVAL_BATCH_SIZE, shuffle=False)
        return predict_scores(self.model, loader, n, device=self.device)

    def predict(self, x, *, top_k: int = 5, batch_size: int | None = None) -> list[dict]:
        """Per row ``{"top_k": [(name, probability), ...] best first, "predicted": [names at the
        thresholds]}``, plus ``"no_features": True`` for a row with no feature the model knows
        (empty text, only unknown words, an all-zero row): its probabilities are the model's
        prior, the same for every such row."""
        X = self.features(x)
        return list(self.rows(self.scores_of_features(X, batch_size=batch_size), top_k=top_k,
                              empty=empty_rows(X)))

    def rows(self, scores: torch.Tensor, *, top_k: int = 5, empty=None) -> Iterator[dict]:
        """:meth:`predict`'s records for a ``(N, L)`` score matrix; ``empty`` (N,) bool marks the
        rows without features (:func:`empty_rows`)."""
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        k = min(top_k, scores.shape[1])
        top_scores, top_labels = scores.topk(k, dim=1)
        chosen = scores >= self.thresholds
        names = self.label_names
        for i, (labels, probs, mask) in enumerate(zip(top_labels.tolist(), top_scores.tolist(), chosen)):
            record = {"top_k": [(names[j], round(p, 6)) for j, p in zip(labels, probs)],
                      "predicted": [names[j] for j in mask.nonzero().flatten().tolist()]}
            if empty is not None and empty[i]:
                record["no_features"] = True
            yield record


def empty_rows(X) -> np.ndarray:
    """(N,) bool: the rows of model input ``X`` (CSR or dense ``(N, D)``) without a nonzero feature."""
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        X.eliminate_zeros()
        return np.diff(X.indptr) == 0
    return ~np.asarray(X).any(axis=1)


def load(run: str | Path, *, device: str | torch.device = "cpu", threshold: float | None = None) -> Classifier:
    """Load a run directory (its ``best.pt``) or a checkpoint file as a :class:`Classifier`.

    Args:
        run: a run directory or a ``.pt`` file.
        device: where the model runs.
        threshold: one global probability threshold for ``predicted`` instead of the
            checkpoint's calibrated per-label thresholds.
    """
    path = checkpoint_path(run, "best.pt")
    return Classifier(RunArtifact.load(path), device=device, threshold=threshold, source=str(path))
