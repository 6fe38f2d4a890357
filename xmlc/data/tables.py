"""Your own data: text tables, LibMultiLabel files and feature matrices (label names and the
label vocabulary: :mod:`xmlc.data.labels`).

Readers turn a user's file into a :class:`RawSplit`: the raw documents (or a feature matrix
the user computed) and, per row, the list of label *names*. :class:`LabelVocab` maps names
to the columns of the label matrix (:mod:`xmlc.data.labels`). Featurising and splitting them is
:func:`xmlc.data.load.load_text_splits`'s work; this module only reads.

Formats (``data.format``):

- ``table``: ``.csv`` / ``.tsv`` (``.gz`` ok), read with Python's :mod:`csv` (quotes, embedded
  separators and newlines as Excel writes them). Columns by name (with a header) or by
  0-based index: ``data.text_column`` (a list joins several columns with a space),
  ``data.labels_column``; labels inside the cell are split on ``data.label_sep``.
  ``data.header: auto`` takes the first row as a header when it holds a column named in
  ``data.text_column`` / ``data.labels_column`` (then every named column must be there); with
  index-only columns there is no header unless ``data.header: true``.
- ``jsonl``: one JSON object per line (``.gz`` ok); the labels value may be a list or a string
  split on ``data.label_sep``.
- ``libmultilabel``: LibMultiLabel's ``[id<TAB>]label label ...<TAB>text``, no header, labels
  separated by whitespace; with or without the id on every line (a line of the other layout is
  bad: ``10<TAB>urgent`` in a file with ids lacks its text).
- ``npz``: features you computed yourself, ``.npy`` (``(N, D)`` float, dense) or ``.npz``
  (scipy CSR, written by ``scipy.sparse.save_npz``), with labels from a text file
  (``data.train_labels`` etc.): one line per row, labels separated by ``data.label_sep``.
- ``xmc``: the Extreme Classification Repository format (:func:`xmlc.data.xmc.read_xmc`).

``auto`` decides from the extension (after ``.gz``) and, for other names, the first line;
:func:`detect_format` returns the decision and the reason, which the trainer prints.

Bad input stops before training, naming the file, the line and what was wrong: a malformed
CSV quote, a bad JSON line, undecodable bytes, a missing column (listing the columns that
exist), a row with too few fields, or more fields than the header (an unquoted delimiter in a
field, which would shift a piece of the text into the labels). With ``data.skip_bad_rows: true`` such rows are skipped
and counted instead. Rows with empty text or no labels are legitimate, kept, and counted in
the :class:`RawSplit` report.

Example:
    >>> split = read_split("tickets.csv", DataConfig(text_column="body", labels_column="tags",
    ...                                              label_sep="|"), key="data.train")
    >>> split.texts[0], split.labels[0]
    ('printer on fire', ['hardware', 'urgent'])
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp

from xmlc.data.container import finite_float32
from xmlc.errors import InputError

__all__ = ["FORMATS", "InputError", "RawSplit", "detect_format", "read_split", "decoded_lines",
           "read_table", "read_jsonl", "read_libmultilabel", "read_feature_matrix", "read_label_lines", "describe"]

FORMATS = ("auto", "xmc", "libmultilabel", "table", "jsonl", "npz")


@dataclass
class RawSplit:
    """One split as read from the user's file, before featurising.

    Attributes:
        texts: the documents (table, jsonl, libmultilabel), else None.
        features: the user's feature matrix (npz format): scipy CSR ``(N, D)`` or a dense
            ``(N, D)`` float32 array; else None.
        labels: per row, the list of label names (strings).
        report: counts: ``rows``, ``lines`` (of the file; 0 for a feature matrix), ``empty_text``,
            ``no_labels``, ``skipped`` (bad rows skipped with ``data.skip_bad_rows``: each one
            line, or the lines of one record) and ``skipped_lines`` (their first line numbers, up
            to 20).
        fmt: the format it was read as.
        lines: the 1-based line on which each row starts (for messages), or None (line = row).
    """

    texts: list[str] | None
    features: Any
    labels: list[list[str]]
    report: dict = field(default_factory=dict)
    fmt: str = ""
    lines: Any = None

    def line_of(self, row: int) -> int:
        """The file line of row ``row`` (0-based row)."""
        return int(self.lines[row]) if self.lines is not None else row + 1

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "RawSplit":
        """Rows ``idx`` (int array) as a new ``RawSplit`` (the report is copied as is)."""
        texts = None if self.texts is None else [self.texts[i] for i in idx]
        features = None if self.features is None else self.features[idx]
        lines = None if self.lines is None else np.asarray(self.lines)[idx]
        return RawSplit(texts, features, [self.labels[i] for i in idx], dict(self.report), self.fmt, lines)


# ---------------------------------------------------------------------------------------
# Opening files, format detection


def _is_gzip(path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open_binary(path):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _base_suffix(path) -> str:
    """The extension that names the format: ``x.tsv.gz`` -> ``.tsv``."""
    name = Path(os.fspath(path)).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix


def decoded_lines(path, name: str, bad: list | None = None) -> Iterator[str]:
    """The file's lines as str (newlines kept); undecodable bytes name the file and the line.

    With ``bad`` a list, an undecodable line is recorded there (its line number) and read as a
    blank line, so the lines after it keep their numbers.
    """
    with _open_binary(path) as f:
        for number, raw in _raw_lines(f, name):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if bad is None:
                    raise InputError(f"{name}: line {number}: bytes that are not UTF-8 at byte "
                                     f"{exc.start} of the line ({raw[exc.start:exc.start + 4]!r}); "
                                     f"save the file as UTF-8") from None
                bad.append(number)
                line = "\n"
            if number == 1 and line.startswith("\ufeff"):   # a byte-order mark (Excel's UTF-8)
                line = line[1:]
            yield line


def _raw_lines(f, name: str) -> Iterator[tuple[int, bytes]]:
    """``(number, bytes)`` of each line of the open file ``f``; damaged or truncated gzip data
    is an :class:`InputError` naming the file and the line it reached."""
    number = 0
    try:
        for number, raw in enumerate(f, 1):
            yield number, raw
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(f"{name}: line {number + 1}: the gzip data is damaged or truncated ({exc})") from None


def _first_line(path) -> str:
    with _open_binary(path) as f:
        raw = f.readline(1 << 16)
    return raw.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r\n")


def detect_format(path, fmt: str = "auto") -> tuple[str, str]:
    """Resolve ``data.format`` for ``path``: ``(format, reason)``.

    ``auto``: ``.csv`` / ``.tsv`` -> table, ``.jsonl`` / ``.json`` -> jsonl, ``.npy`` / ``.npz``
    -> npz (each also ``.gz``); any other name by its first line: only numbers, ``,`` and ``:``
    (``N D L`` or ``labels f:v ...``) -> xmc, a line starting with ``{`` -> jsonl, a line with a
    tab -> libmultilabel, anything else -> xmc (whose reader then names what is wrong).
    """
    if fmt not in FORMATS:
        raise InputError(f"data.format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if fmt != "auto":
        return fmt, "data.format"
    suffix = _base_suffix(path)
    by_suffix = {".csv": "table", ".tsv": "table", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
                 ".npy": "npz", ".npz": "npz"}
    if suffix in by_suffix:
        return by_suffix[suffix], f"extension {suffix}"
    line = _first_line(path)
    if line and all(c in "0123456789,:. \t+-eE\r" for c in line):
        return "xmc", "first line holds only numbers, ',' and ':'"
    if line.lstrip().startswith("{"):
        return "jsonl", "first line is a JSON object"
    if "\t" in line:
        return "libmultilabel", "first line has tab-separated labels and text"
    return "xmc", "not a .csv/.tsv/.jsonl/.npy/.npz name, no tab or JSON in the first line"


# ---------------------------------------------------------------------------------------
# Label cells


def _split_labels(cell: str, sep: str) -> list[str]:
    pieces = cell.split() if sep.strip() == "" else cell.split(sep)
    return [p.strip() for p in pieces if p.strip()]


class _Rows:
    """Collects rows and counts; a bad row raises, or is skipped and counted."""

    def __init__(self, name: str, skip_bad_rows: bool):
        self.name, self.skip = name, skip_bad_rows
        self.texts: list[str] = []
        self.labels: list[list[str]] = []
        self.lines = array("q")
        self.skipped: list[int] = []
        self.empty_text = self.no_labels = 0
        self.lines_read = 0   # lines of the file, set by the reader at its end

    def add(self, line: int, text: str, labels: list[str]) -> None:
        self.lines.append(line)
        if not text.strip():
            self.empty_text += 1
        if not labels:
            self.no_labels += 1
        self.texts.append(text)
        self.labels.append(labels)

    def bad(self, line: int, what: str) -> None:
        if not self.skip:
            raise InputError(f"{self.name}: line {line}: {what} (set data.skip_bad_rows=true to skip "
                             f"and count such rows)")
        self.skipped.append(line)

    def split(self, fmt: str) -> RawSplit:
        report = {"rows": len(self.labels), "lines": self.lines_read, "empty_text": self.empty_text,
                  "no_labels": self.no_labels, "skipped": len(self.skipped),
                  "skipped_lines": sorted(self.skipped)[:20]}
        return RawSplit(self.texts, None, self.labels, report, fmt, self.lines)


# ---------------------------------------------------------------------------------------
# Readers


def _as_list(spec) -> list:
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def read_table(path, *, text_column="text", labels_column="labels", label_sep: str = ",",
               header="auto", delimiter: str | None = None, skip_bad_rows: bool = False) -> RawSplit:
    """Read a ``.csv`` / ``.tsv`` table (``.gz`` ok) of texts and labels with :mod:`csv`.

    Args:
        path: the file; the delimiter is a tab for ``.tsv``, else a comma (or ``delimiter``).
        text_column: column name or 0-based index, or a list of them (joined with a space).
        labels_column: column name or 0-based index; None: no labels (every row gets ``[]``).
        label_sep: separator of the labels inside the labels cell (whitespace: any run of it).
        header: ``"auto"`` | True | False (see the module docstring for ``auto``).
        skip_bad_rows: skip and count malformed rows instead of stopping.

    Returns:
        :class:`RawSplit` with ``texts`` and ``labels``.

    Raises:
        InputError: naming the file and line: bad quoting, too few fields, more fields than
            the header (or the first row, without a header), undecodable bytes;
            a named column missing from the header (listing the header's columns).
    """
    name = os.fspath(path)
    if delimiter is None:
        delimiter = "\t" if _base_suffix(path) == ".tsv" else ","
    text_specs = _as_list(text_column)
    n_text = len(text_specs)
    specs = text_specs + ([labels_column] if labels_column is not None else [])
    rows = _Rows(name, skip_bad_rows)
    undecodable: list[int] | None = [] if skip_bad_rows else None
    lines = _Lines(decoded_lines(path, name, undecodable))
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    limit = csv.field_size_limit(2**31 - 1)   # a long document is a valid cell (the default stops at 128 KiB)
    try:
        _read_records(name, reader, lines, rows, header, specs, n_text, label_sep, delimiter)
    finally:
        csv.field_size_limit(limit)
    if undecodable:
        rows.skipped.extend(undecodable)
    rows.lines_read = lines.count()
    return rows.split("table")


def _read_records(name, reader, lines, rows, header, specs, n_text, label_sep, delimiter):
    """The records of a table into ``rows`` (see :func:`read_table`); returns nothing."""
    columns: list[int] | None = None
    width = 0   # fields in the header (or in the first row of a file without one)
    for start, record in _csv_records(reader, lines, rows):
        if columns is None:   # the first record: a header, or the first row
            columns, is_header = _table_columns(name, start, record, header, specs)
            width = len(record)
            if is_header:
                continue
        if not record:   # a blank line
            continue
        need = max(columns) + 1
        if len(record) < need:
            rows.bad(start, f"{len(record)} field(s) but column {need - 1} is needed "
                            f"(delimiter {delimiter!r})")
            lines.read_again_after_first()   # a record of several lines: its first is the bad one
            continue
        if len(record) > width:   # an unquoted delimiter inside a field would shift every column after it
            rows.bad(start, f"{len(record)} fields but the {'header' if is_header else 'first row'} has {width}: "
                            f"a field holding the delimiter {delimiter!r} must be quoted (\"a, b\")")
            lines.read_again_after_first()
            continue
        text = " ".join(record[c] for c in columns[:n_text])
        rows.add(start, text, _split_labels(record[columns[n_text]], label_sep) if len(columns) > n_text else [])


class _Lines:
    """The file's lines for :mod:`csv`, counted; the lines of a malformed record but its first can
    be read again, so that skipping it skips one line, never the rest of the file (an unclosed
    quote would otherwise take every line after it into one field)."""

    def __init__(self, lines: Iterator[str]):
        self.source, self.again, self.taken, self.done = lines, [], [], 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.again.pop() if self.again else next(self.source)
        self.taken.append(line)
        return line

    def start(self) -> int:
        """Begin a record; returns the number of its first line."""
        self.done += len(self.taken)
        self.taken = []
        return self.done + 1

    def read_again_after_first(self) -> None:
        self.again.extend(reversed(self.taken[1:]))
        del self.taken[1:]

    def count(self) -> int:
        """Lines read so far."""
        return self.done + len(self.taken)


def _csv_records(reader, lines: _Lines, rows: _Rows) -> Iterator[tuple[int, list[str]]]:
    """``(first line, fields)`` of each record ``reader`` yields; a malformed one goes to
    ``rows.bad``, and the lines after its first are read again."""
    while True:
        start = lines.start()
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            rows.bad(start, f"malformed CSV ({exc}); a quote inside a quoted field is written twice (\"\")")
            lines.read_again_after_first()
            continue
        yield start, record


def _table_columns(name: str, start: int, record: list[str], header, specs: list) -> tuple[list[int], bool]:
    """``(column index per spec, whether record is the header)`` from the first record."""
    named = [s for s in specs if isinstance(s, str)]
    has_header = header is True or (header == "auto" and any(s in record for s in named))
    if has_header:
        missing = [s for s in named if s not in record]
        if missing:
            raise InputError(f"{name}: line {start}: no column named {missing[0]!r}; the header "
                             f"has columns {record}")
        return [record.index(s) if isinstance(s, str) else s for s in specs], True
    if named:
        raise InputError(
            f"{name}: line {start}: no column named {', '.join(map(repr, named))} in the first "
            f"row {record[:10]}; name existing columns in data.text_column / data.labels_column, "
            f"or give 0-based indices for a file without a header (and data.header=false)")
    return list(specs), False


def read_jsonl(path, *, text_column="text", labels_column="labels", label_sep: str = ",",
               skip_bad_rows: bool = False) -> RawSplit:
    """Read JSON lines (``.gz`` ok): one object per line; blank lines are ignored.

    ``text_column`` (a key, or a list of keys joined with a space) must hold a string;
    ``labels_column`` a list of labels or a string split on ``label_sep`` (None: no labels).
    """
    name = os.fspath(path)
    text_keys = _as_list(text_column)
    label_keys = [labels_column] if labels_column is not None else []
    for key in text_keys + label_keys:
        if not isinstance(key, str):
            raise InputError(f"{name}: JSON lines are read by key; data.text_column / data.labels_column "
                             f"must be names, got {key!r}")
    rows = _Rows(name, skip_bad_rows)
    undecodable: list[int] | None = [] if skip_bad_rows else None
    number = 0
    for number, line in enumerate(decoded_lines(path, name, undecodable), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.bad(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            rows.bad(number, f"expected a JSON object, got {type(obj).__name__}")
            continue
        missing = [k for k in text_keys + label_keys if k not in obj]
        if missing:
            rows.bad(number, f"no key {missing[0]!r}; this line has keys {sorted(obj)}")
            continue
        parts = [obj[k] for k in text_keys]
        if not all(isinstance(p, str) for p in parts):
            rows.bad(number, f"text key(s) {text_keys} must hold strings")
            continue
        value = obj[labels_column] if label_keys else None
        if isinstance(value, list):
            labels = [str(v).strip() for v in value if str(v).strip()]
        elif isinstance(value, (str, int)):
            labels = _split_labels(str(value), label_sep)
        elif value is None:
            labels = []
        else:
            rows.bad(number, f"key {labels_column!r} must hold a list or a string, got {type(value).__name__}")
            continue
        rows.add(number, " ".join(parts), labels)
    if undecodable:
        rows.skipped.extend(undecodable)
    rows.lines_read = number
    return rows.split("jsonl")


def read_libmultilabel(path, *, skip_bad_rows: bool = False, with_labels: bool = True) -> RawSplit:
    """Read LibMultiLabel's text layout: ``[id<TAB>]label label ...<TAB>text`` per line, no header;
    the first line decides whether there is an id, and every line must then have as many fields.

    With ``with_labels=False`` (prediction) a line may also be the text alone; labels are ignored."""
    name = os.fspath(path)
    rows = _Rows(name, skip_bad_rows)
    undecodable: list[int] | None = [] if skip_bad_rows else None
    width = first = None   # the layout, 2 or 3 fields, set by the first line that has one of them
    number = 0
    for number, line in enumerate(decoded_lines(path, name, undecodable), 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if not with_labels:
            rows.add(number, fields[-1], [])
            continue
        if len(fields) not in (2, 3):
            rows.bad(number, f"{len(fields)} tab-separated field(s); expected [id<TAB>]labels<TAB>text")
            continue
        if width is None:
            width, first = len(fields), number
        if len(fields) != width:   # id<TAB>labels (text missing) would read the id as a label
            layout = {2: "labels<TAB>text", 3: "id<TAB>labels<TAB>text"}
            rows.bad(number, f"{len(fields)} tab-separated fields but line {first} has {width} "
                             f"({layout[width]}); every line of a file has the same layout")
            continue
        rows.add(number, fields[-1], fields[-2].split())
    if undecodable:
        rows.skipped.extend(undecodable)
    rows.lines_read = number
    return rows.split("libmultilabel")


def read_feature_matrix(path):
    """``.npy`` (dense ``(N, D)``, ``.gz`` ok) or ``.npz`` (scipy sparse) features, float32.

    Returns a dense float32 ndarray for ``.npy`` and a CSR matrix (sorted indices) for ``.npz``.
    Never unpickles (``allow_pickle=False``).
    """
    name = os.fspath(path)
    suffix = _base_suffix(path)
    with _open_binary(path) as f:
        magic = f.read(6)
    expected = b"PK\x03\x04" if suffix == ".npz" else b"\x93NUMPY"
    if not magic.startswith(expected):
        raise InputError(f"{name}: not a {'.npz (scipy.sparse.save_npz)' if suffix == '.npz' else '.npy (numpy.save)'} "
                         f"file: it starts with {magic!r}; data.format=npz reads feature matrices only (a text "
                         f"table is data.format=table)")
    try:
        if suffix == ".npz":
            matrix = sp.load_npz(name).tocsr()
            matrix.sum_duplicates()
            matrix.sort_indices()
        else:
            with _open_binary(path) as f:
                matrix = np.load(io.BytesIO(f.read()), allow_pickle=False)
            if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
                raise InputError(f"{name}: expected a 2-d numeric (N, D) array, got shape {matrix.shape} "
                                 f"dtype {matrix.dtype}")
    except InputError:
        raise
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise InputError(f"{name}: cannot read a feature matrix ({'.npz: scipy.sparse.save_npz' if suffix == '.npz' else '.npy: numpy.save'} "
                         f"format expected): {exc}") from None
    return finite_float32(matrix, name)   # NaN, inf and values past float32's range (1e40) named


def read_label_lines(path, *, label_sep: str = ",", skip_bad_rows: bool = False) -> list[list[str]]:
    """Labels for a feature matrix: one line per row, labels separated by ``label_sep``; an
    empty line is a row without labels."""
    name = os.fspath(path)
    return [_split_labels(line.rstrip("\r\n"), label_sep) for line in decoded_lines(path, name)]


def read_split(path, dcfg, *, key: str, labels_path=None, fmt: str | None = None,
               with_labels: bool = True) -> RawSplit:
    """Read one split named by config key ``key`` in the format ``fmt`` (resolved, not auto).

    ``dcfg`` is the ``data`` config section (columns, separator, header, skip_bad_rows);
    ``labels_path`` the labels file of a feature matrix (``data.<split>_labels``);
    ``with_labels=False`` (prediction) reads no labels: every row gets ``[]``.
    """
    labels_column = dcfg.labels_column if with_labels else None
    fmt = fmt or detect_format(path, dcfg.format)[0]
    if isinstance(dcfg.text_column, (list, tuple)) and not dcfg.text_column and fmt in ("table", "jsonl"):
        raise InputError("config key 'data.text_column' is an empty list; name the column(s) holding the text")
    if dcfg.label_sep == "" and fmt != "libmultilabel":
        raise InputError("config key 'data.label_sep' is empty; on the command line YAML reads a bare | or "
                         "space as empty: quote it, e.g. data.label_sep=\"'|'\" or data.label_sep=\"' '\"")
    if fmt == "table":
        return read_table(path, text_column=dcfg.text_column, labels_column=labels_column,
                          label_sep=dcfg.label_sep, header=dcfg.header, skip_bad_rows=dcfg.skip_bad_rows)
    if fmt == "jsonl":
        return read_jsonl(path, text_column=dcfg.text_column, labels_column=labels_column,
                          label_sep=dcfg.label_sep, skip_bad_rows=dcfg.skip_bad_rows)
    if fmt == "libmultilabel":
        return read_libmultilabel(path, skip_bad_rows=dcfg.skip_bad_rows, with_labels=with_labels)
    if fmt == "npz":
        features = read_feature_matrix(path)
        if labels_path is None or not with_labels:
            labels = [[] for _ in range(features.shape[0])]
        else:
            labels = read_label_lines(labels_path, label_sep=dcfg.label_sep)
            if len(labels) != features.shape[0]:
                raise InputError(f"{os.fspath(path)} has {features.shape[0]} rows but its labels file "
                                 f"{os.fspath(labels_path)} has {len(labels)} lines")
        report = {"rows": len(labels), "lines": 0, "empty_text": 0, "no_labels": sum(not l for l in labels),
                  "skipped": 0, "skipped_lines": []}
        return RawSplit(None, features, labels, report, "npz")
    raise InputError(f"{key}: format {fmt!r} is not a raw-input format")


def describe(split: RawSplit, key: str) -> str:
    """One line about a split's counts (empty texts, rows without labels, skipped rows)."""
    r = split.report
    parts = [f"{r['rows']:,} rows" + (f" read from {r['lines']:,} lines" if r.get("lines") else "")]
    if r.get("empty_text"):
        parts.append(f"{r['empty_text']:,} with empty text (kept: no features)")
    if r.get("no_labels"):
        parts.append(f"{r['no_labels']:,} without labels (kept)")
    if r.get("skipped"):
        parts.append(f"{r['skipped']:,} bad rows skipped (lines {', '.join(map(str, r['skipped_lines']))}"
                     f"{', ...' if r['skipped'] > len(r['skipped_lines']) else ''})")
    return f"{key}: " + ", ".join(parts)
