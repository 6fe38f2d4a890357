"""Label names: the ``data.label_names`` file, integer ids mapped to names, and the label
vocabulary (:class:`LabelVocab`, names <-> label matrix columns) a run keeps in its checkpoint.

Layer: reads files through :mod:`xmlc.data.tables`' line decoder; imported by :mod:`xmlc.data.load`.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import scipy.sparse as sp

from xmlc.data.tables import decoded_lines
from xmlc.errors import InputError

__all__ = ["read_label_names", "ids_to_names", "LabelVocab"]


def read_label_names(path) -> list[str]:
    """``data.label_names``: one label name per line, line ``i`` naming label id ``i``; names unique."""
    name = os.fspath(path)
    names = [line.rstrip("\r\n").strip() for line in decoded_lines(path, name)]
    while names and not names[-1]:
        names.pop()
    for i, n in enumerate(names):
        if not n:
            raise InputError(f"{name}: line {i + 1}: empty label name")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise InputError(f"{name}: line {i + 1}: label name {n!r} repeats line {seen[n] + 1}")
        seen[n] = i
    return names


def ids_to_names(labels: list[list[str]], names: list[str], where: str, line_of=lambda row: row + 1) -> list[list[str]]:
    """Integer label ids (as strings) -> names from ``data.label_names``; a name already in
    ``names`` passes through. Anything else raises, naming ``where`` and the line."""
    known = set(names)
    out = []
    for row, labs in enumerate(labels):
        mapped = []
        for lab in labs:
            if lab in known:
                mapped.append(lab)
            elif lab.isdigit() and int(lab) < len(names):
                mapped.append(names[int(lab)])
            else:
                raise InputError(f"{where}: line {line_of(row)}: label {lab!r} is neither a label id in "
                                 f"[0, {len(names)}) nor a name in data.label_names")
        out.append(mapped)
    return out


class LabelVocab:
    """Label names <-> label matrix columns.

    Order: the names of ``data.label_names`` in file order when given (column ``i`` is id
    ``i``, so integer ids are never renumbered); otherwise the order of first appearance in
    the training file. Stored in checkpoints as the plain list :attr:`names`.

    Example:
        >>> vocab = LabelVocab.build([["b", "a"], ["a", "c"]])
        >>> vocab.names
        ['b', 'a', 'c']
        >>> Y, unseen = vocab.encode([["a", "z"]])
        >>> Y.toarray(), dict(unseen)
        (array([[0., 1., 0.]], dtype=float32), {'z': 1})
    """

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        if len(self.index) != len(self.names):
            raise InputError("label names must be unique")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def build(cls, labels: list[list[str]], names: list[str] | None = None) -> "LabelVocab":
        """From the training labels (first appearance order), or the fixed ``names``."""
        if names is not None:
            return cls(names)
        return cls(list(dict.fromkeys(lab for labs in labels for lab in labs)))

    def encode(self, labels: list[list[str]]) -> tuple[sp.csr_matrix, Counter]:
        """CSR ``(N, L)`` float32 {0, 1}; names not in the vocabulary are left out and counted
        (returned as a ``Counter`` name -> rows)."""
        index, unseen = self.index, Counter()
        indptr = np.zeros(len(labels) + 1, dtype=np.int64)
        cols: list[int] = []
        for i, labs in enumerate(labels):
            row = set()
            for lab in labs:
                j = index.get(lab)
                if j is None:
                    unseen[lab] += 1
                else:
                    row.add(j)
            cols.extend(sorted(row))
            indptr[i + 1] = len(cols)
        cols_arr = np.asarray(cols, dtype=np.int32)
        Y = sp.csr_matrix((np.ones(cols_arr.size, np.float32), cols_arr, indptr.astype(np.int32)),
                          shape=(len(labels), len(self.names)))
        return Y, unseen
