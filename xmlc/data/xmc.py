"""The Extreme Classification Repository text format: :func:`read_xmc` and :func:`write_xmc`.

An optional header ``N D L``, then one line per example, ``l1,l2,... f:v f:v ...`` with 0-based
indices; a line with no labels starts with a space. Without the header it is the libsvm
multilabel format. Parsing is vectorised over the whole buffer; errors name the file, the line
and the token.
"""

from __future__ import annotations

import gzip
import math
import os

import numpy as np
import scipy.sparse as sp
import torch

from xmlc.data.container import XMCData

__all__ = ["read_xmc", "write_xmc"]

_SEPARATORS_TO_SPACE = bytes.maketrans(b":,", b"  ")
_NOT_CONTROL = bytes(range(9, 14)) + bytes(range(32, 256))


def _read_bytes(path) -> bytes:
    path = os.fspath(path)
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        with gzip.open(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def _parse_header(first_line: bytes) -> tuple[int, int, int] | None:
    """``N D L`` if the first line is exactly three bare non-negative integers, else None."""
    parts = first_line.split()
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        n, d, l = (int(p) for p in parts)
        return n, d, l
    return None


def _fromstring(buf: bytes) -> np.ndarray | None:
    """All numbers in ``buf`` (separators already spaces) as float64, or None if one fails."""
    try:
        return np.fromstring(buf, dtype=np.float64, sep=" ")
    except ValueError:
        return None


class _Body:
    """The body of a file and where its lines and words are (filled in by the parse steps:
    ``newlines``, ``line_start``, ``starts``, ``ends``, ``line_of_word``), for error messages."""

    def __init__(self, buf: bytes, name: str, first_line_no: int):
        self.buf = buf
        self.name = name
        self.first_line_no = first_line_no

    def word(self, w: int) -> str:
        return self.buf[self.starts[w] : self.ends[w]].decode("utf-8", "replace")

    def line_no(self, w: int) -> int:
        return int(self.line_of_word[w]) + self.first_line_no

    def fail(self, w: int, what: str) -> None:
        raise ValueError(f"{self.name}: line {self.line_no(w)}: {what} in token {self.word(w)!r}")


def _bad_piece(word: str) -> str:
    """The first piece of a word that is not a number (for error messages)."""
    for piece in word.replace(",", ":").split(":"):
        try:
            float(piece)
        except ValueError:
            return piece
    return word


def _parse_body(buf: bytes, name: str, first_line_no: int, header, num_features, num_labels):
    """Vectorised parse of the example lines; see ``read_xmc``."""
    body = _Body(buf, name, first_line_no)
    b = np.frombuffer(buf, dtype=np.uint8)
    num_lines = _split_lines(body, b, header)
    is_pair, is_label, count = _classify_words(body, b)
    label_words, pair_words, label_vals, feat_idx, feat_val = _split_numbers(body, count, is_pair, is_label)

    def label_word_of(k: int) -> int:  # k-th label number -> its word
        ends_ = np.cumsum(count[label_words])
        return int(label_words[np.searchsorted(ends_, k, side="right")])

    # Bounds: from the arguments, else the header, else the data.
    L = _resolve_bound(name, "num_labels", num_labels, header[2] if header else None)
    D = _resolve_bound(name, "num_features", num_features, header[1] if header else None)
    labels_int = _check_indices(label_vals, L, lambda k: body.fail(label_word_of(k), _index_problem(label_vals[k], L, "label")))
    feat_int = _check_indices(feat_idx, D, lambda k: body.fail(int(pair_words[k]), _index_problem(feat_idx[k], D, "feature")))
    feat_val32 = _as_float32(body, feat_val, pair_words)
    del feat_val
    L = L if L is not None else int(labels_int.max(initial=-1)) + 1
    D = D if D is not None else int(feat_int.max(initial=-1)) + 1

    label_rows = np.repeat(body.line_of_word[label_words], count[label_words])
    feat_rows = body.line_of_word[pair_words]
    labels = _build_csr(
        label_rows, labels_int, np.ones(labels_int.size, np.float32), num_lines, L,
        lambda k: body.fail(label_word_of(k), f"duplicate label {int(labels_int[k])}"),
    )
    features = _build_csr(
        feat_rows, feat_int, feat_val32, num_lines, D,
        lambda k: body.fail(int(pair_words[k]), f"duplicate feature index {int(feat_int[k])}"),
    )
    return XMCData(features, labels, D, L)


def _split_lines(body: _Body, b: np.ndarray, header) -> int:
    """Find the lines of the body (``body.newlines``, ``body.line_start``) and check them: the
    header's N, no empty line, no control byte. Returns the number of lines."""
    name, first_line_no, n = body.name, body.first_line_no, b.size
    # Lines: newline positions, plus a virtual one at the end.
    nl = np.flatnonzero(b == 10)
    if n and b[-1] != 10:
        nl = np.append(nl, n)
    num_lines = nl.size
    line_start = np.empty(num_lines, dtype=np.int64)
    if num_lines:
        line_start[0] = 0
        line_start[1:] = nl[:-1] + 1
    line_len = nl - line_start
    if header is not None and header[0] != num_lines:
        line = first_line_no + min(num_lines, header[0])
        raise ValueError(
            f"{name}: line {line}: header says N={header[0]} examples but the file has {num_lines} example lines"
        )
    empty = np.flatnonzero((line_len == 0) | ((line_len == 1) & (b[np.minimum(line_start, max(n - 1, 0))] == 13)))
    if empty.size:
        raise ValueError(
            f"{name}: line {int(empty[0]) + first_line_no}: empty line in the middle of the data "
            "(an example with no labels and no features is written as a single space)"
        )
    if body.buf.translate(None, _NOT_CONTROL):   # a control byte other than \t \n \v \f \r (a quick gate)
        at = int(np.flatnonzero((b < 32) & ((b < 9) | (b > 13)))[0])
        raise ValueError(f"{name}: line {int(np.searchsorted(nl, at)) + first_line_no}: control byte "
                         f"{body.buf[at:at + 1]!r} (tokens are separated by spaces or tabs)")
    body.newlines, body.line_start = nl, line_start
    return num_lines


def _classify_words(body: _Body, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the words (``body.starts``, ``body.ends``, ``body.line_of_word``) and tell label lists
    from ``f:v`` pairs. Returns ``(is_pair, is_label, count)``, ``count`` the numbers per word."""
    # Words: maximal runs of non-whitespace bytes.
    ws = b <= 32
    start_mask = ~ws
    start_mask[1:] &= ws[:-1]
    starts = np.flatnonzero(start_mask)
    del start_mask
    end_mask = ~ws
    end_mask[:-1] &= ws[1:]
    ends = np.flatnonzero(end_mask) + 1
    del end_mask, ws
    num_words = starts.size
    body.starts, body.ends = starts, ends
    line_of_word = np.searchsorted(body.newlines, starts)
    body.line_of_word = line_of_word

    # A word is a pair "f:v" (exactly one colon) or, first on its line and starting at the
    # first byte of the line, a comma-separated label list.
    colon_word = np.searchsorted(starts, np.flatnonzero(b == 58), side="right") - 1
    if colon_word.size > 1:
        twice = np.flatnonzero(np.diff(colon_word) == 0)
        if twice.size:
            body.fail(int(colon_word[twice[0]]), "more than one ':' in a feature:value pair")
    is_pair = np.zeros(num_words, dtype=bool)
    is_pair[colon_word] = True
    at_line_start = starts == body.line_start[line_of_word]
    is_label = at_line_start & ~is_pair
    bad = np.flatnonzero(~is_label & ~is_pair)
    if bad.size:
        body.fail(int(bad[0]), "malformed feature:value pair (labels must come first, at the start of the line)")
    comma_word = np.searchsorted(starts, np.flatnonzero(b == 44), side="right") - 1
    bad = np.flatnonzero(~is_label[comma_word])
    if bad.size:
        body.fail(int(comma_word[bad[0]]), "',' outside the label list")

    # Numbers: one per label, two per pair.
    count = np.where(is_pair, 2, 1).astype(np.int64)
    count += np.bincount(comma_word, minlength=num_words)
    return is_pair, is_label, count


def _split_numbers(body: _Body, count: np.ndarray, is_pair: np.ndarray, is_label: np.ndarray):
    """All numbers of the body in one ``fromstring``, split into labels and pairs.

    Returns ``(label_words, pair_words, label_vals, feat_idx, feat_val)``: the word of each label
    list and pair, the label numbers, the feature indices and values (float64)."""
    expected = int(count.sum())
    nums = _fromstring(body.buf.translate(_SEPARATORS_TO_SPACE)) if expected else np.empty(0)
    if nums is None or nums.size != expected:
        _locate_bad_word(body, count)
    offset = np.zeros(count.size + 1, dtype=np.int64)
    np.cumsum(count, out=offset[1:])
    pair_words = np.flatnonzero(is_pair)
    pair_at = offset[pair_words]
    label_words = np.flatnonzero(is_label)
    label_mask = np.ones(expected, dtype=bool)
    label_mask[pair_at] = False
    label_mask[pair_at + 1] = False
    return label_words, pair_words, nums[label_mask], nums[pair_at], nums[pair_at + 1]


def _as_float32(body: _Body, feat_val: np.ndarray, pair_words: np.ndarray) -> np.ndarray:
    """Feature values as float32; a value that is not finite there fails, naming its pair."""
    with np.errstate(over="ignore"):   # a finite float64 past float32's range becomes inf here
        feat_val32 = feat_val.astype(np.float32)
    finite = np.isfinite(feat_val32)
    if not finite.all():
        k = int(np.flatnonzero(~finite)[0])
        value = float(feat_val[k])
        what = (f"value {value:g} is not finite as float32 (largest {float(np.finfo(np.float32).max):g})"
                if math.isfinite(value) else f"non-finite value {value}")
        body.fail(int(pair_words[k]), what)
    return feat_val32


def _resolve_bound(name, arg_name, given, from_header):
    if given is not None:
        given = int(given)
        if given < 0:
            raise ValueError(f"{arg_name} must be >= 0, got {given}")
        if from_header is not None and from_header != given:
            raise ValueError(f"{name}: header says {arg_name}={from_header} but {arg_name}={given} was passed")
        return given
    return from_header


def _index_problem(value: float, bound, kind: str) -> str:
    value = float(value)
    if value != math.floor(value) or value < 0:
        return f"{kind} index {value!r} is not a non-negative integer"
    return f"{kind} index {int(value)} is out of range [0, {bound})"


def _check_indices(values: np.ndarray, bound, fail) -> np.ndarray:
    """float64 indices -> int64, calling ``fail(k)`` on the first bad one."""
    limit = bound if bound is not None else 2.0**53
    ok = (values >= 0) & (values < limit)
    as_int = values.astype(np.int64) if ok.all() else np.where(ok, values, 0).astype(np.int64)
    ok &= as_int == values
    if not ok.all():
        fail(int(np.flatnonzero(~ok)[0]))
    return as_int


def _build_csr(rows, cols, vals, n_rows, n_cols, fail_duplicate) -> sp.csr_matrix:
    """CSR from row-sorted COO; sorts columns within rows; ``fail_duplicate(k)`` on a repeat."""
    key = rows * max(n_cols, 1) + cols
    diffs = np.diff(key)
    if not (diffs > 0).all():
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        dup = np.flatnonzero(np.diff(sorted_key) == 0)
        if dup.size:
            fail_duplicate(int(order[dup[0] + 1]))
        cols, vals = cols[order], vals[order]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    index_dtype = np.int32 if max(n_cols, cols.size) < 2**31 else np.int64
    return sp.csr_matrix(
        (vals, cols.astype(index_dtype), indptr.astype(index_dtype)), shape=(n_rows, n_cols)
    )


def _locate_bad_word(body: _Body, count: np.ndarray) -> None:
    """A vectorised check failed: bisect the words with ``fromstring`` to name the culprit."""
    buf = body.buf
    offset = np.zeros(count.size + 1, dtype=np.int64)
    np.cumsum(count, out=offset[1:])

    def ok(lo: int, hi: int) -> bool:  # words [lo, hi) parse to the expected count
        got = _fromstring(buf[body.starts[lo] : body.ends[hi - 1]].translate(_SEPARATORS_TO_SPACE))
        return got is not None and got.size == offset[hi] - offset[lo]

    lo, hi = 0, count.size
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if not ok(lo, mid):
            hi = mid
        else:
            lo = mid
    word = body.word(lo)
    piece = _bad_piece(word)
    what = f"non-numeric value {piece!r}" if piece != word or piece == "" else "malformed token"
    if piece == word and ("," in word or ":" in word):
        what = "empty index or value"
    body.fail(lo, what)


def read_xmc(path, *, num_features: int | None = None, num_labels: int | None = None) -> XMCData:
    """Read the XMC repository text format (header optional: libsvm multilabel), ``.gz`` ok.

    Parsing is vectorised over the whole buffer (numpy, no per-token Python loop); line
    numbers for error messages are computed only after a check fails.

    Args:
        path: file path; gzip is detected from the magic bytes.
        num_features: ``D``. Default: from the header, else max feature index + 1.
        num_labels: ``L``. Default: from the header, else max label index + 1.

    Returns:
        ``XMCData`` with features CSR ``(N, D)`` float32 and labels CSR ``(N, L)`` float32.

    Raises:
        ValueError: naming the file, the line and the token: malformed pairs, non-numeric,
            NaN or inf values (also finite values past float32's range, such as 1e40),
            label >= L or feature >= D, a header N that disagrees with the number of
            lines, duplicate indices on a line, empty lines inside the data; an empty file.

    Example:
        >>> data = read_xmc("delicious_train.txt.gz")
        >>> data.features.shape, data.labels.shape
        ((12920, 500), (12920, 983))
    """
    name = os.fspath(path)
    raw = _read_bytes(path)
    if not raw.strip(b"\r\n"):
        raise ValueError(f"{name}: the file is empty (no header, no examples)")
    first_nl = raw.find(b"\n")
    first_line = raw if first_nl < 0 else raw[:first_nl]
    header = _parse_header(first_line)
    body = raw[first_nl + 1 :] if header is not None and first_nl >= 0 else (b"" if header is not None else raw)
    del raw
    body = body.rstrip(b"\r\n")
    return _parse_body(body, name, 2 if header is not None else 1, header, num_features, num_labels)


def _as_csr(matrix, name: str) -> sp.csr_matrix:
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.to_dense().numpy() if matrix.is_sparse or matrix.layout != torch.strided else matrix.numpy()
    if sp.issparse(matrix):
        out = sp.csr_matrix(matrix)
    else:
        out = sp.csr_matrix(np.asarray(matrix))
    out.sum_duplicates()
    out.sort_indices()
    return out


def _format_numbers(values: np.ndarray) -> np.ndarray:
    """Shortest round-trip text for float32 values; integers without ``.0``."""
    values = values.astype(np.float32)
    is_int = (values == np.round(values)) & (np.abs(values) < 2**53)
    text = values.astype("S")
    if is_int.any():
        text[is_int] = values[is_int].astype(np.int64).astype("S")
    return text


def write_xmc(path, features, labels, *, header: bool = True) -> None:
    """Write the XMC text format that ``read_xmc`` reads back identically.

    Vectorised: every token is formatted by numpy and the lines are assembled by a
    scatter into one byte buffer (no per-example Python loop).

    Args:
        path: output path; ``.gz`` compresses.
        features: ``(N, D)`` scipy sparse or dense; float32 values are written in their
            shortest round-trip form.
        labels: ``(N, L)`` {0, 1}, scipy sparse or dense.
        header: write the ``N D L`` first line (False gives libsvm multilabel lines).
    """
    X = _as_csr(features, "features")
    Y = _as_csr(labels, "labels")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"features has {X.shape[0]} rows but labels has {Y.shape[0]}")
    if Y.nnz and not np.all(Y.data == 1):
        bad = Y.data[Y.data != 1][0]
        raise ValueError(f"labels must be 0/1, found value {bad!r}")
    if X.nnz and not np.isfinite(X.data).all():
        raise ValueError("features contain NaN or inf")
    n = X.shape[0]
    chunks = []
    if header:
        chunks.append(f"{n} {X.shape[1]} {Y.shape[1]}\n".encode())
    rows_per_chunk = max(1, int(2_000_000 / max(1.0, (X.nnz + Y.nnz) / max(n, 1))))
    for r0 in range(0, n, rows_per_chunk):
        r1 = min(n, r0 + rows_per_chunk)
        chunks.append(_format_rows(X[r0:r1], Y[r0:r1]))
    data = b"".join(chunks)
    path = os.fspath(path)
    if path.endswith(".gz"):
        with gzip.open(path, "wb", compresslevel=6) as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def _format_rows(X: sp.csr_matrix, Y: sp.csr_matrix) -> bytes:
    n = X.shape[0]
    lp = Y.indptr.astype(np.int64)
    fp = X.indptr.astype(np.int64)
    rows = np.arange(n, dtype=np.int64)
    total = Y.nnz + X.nnz + n
    lab_text = Y.indices.astype(np.int64).astype("S")
    first = np.zeros(Y.nnz, dtype=bool)
    first[lp[:-1][np.diff(lp) > 0]] = True
    lab_text = np.strings.add(np.where(first, b"", b","), lab_text)
    pair_text = np.strings.add(
        np.strings.add(np.strings.add(b" ", X.indices.astype(np.int64).astype("S")), b":"),
        _format_numbers(X.data),
    )
    width = max(lab_text.dtype.itemsize if Y.nnz else 1, pair_text.dtype.itemsize if X.nnz else 1)
    out = np.zeros(total, dtype=f"S{width}")
    lab_row = np.repeat(rows, np.diff(lp))
    out[fp[lab_row] + lab_row + np.arange(Y.nnz)] = lab_text
    feat_row = np.repeat(rows, np.diff(fp))
    out[lp[feat_row + 1] + feat_row + np.arange(X.nnz)] = pair_text
    out[lp[1:] + fp[1:] + rows] = b"\n"
    # Rows with no labels start with a space (the pair's own leading space does that).
    # Rows with no labels and no features are a single space.
    empty = (np.diff(lp) == 0) & (np.diff(fp) == 0)
    out[lp[1:][empty] + fp[1:][empty] + rows[empty]] = b" \n"
    flat = np.frombuffer(out.tobytes(), dtype=np.uint8)
    return flat[flat != 0].tobytes()

