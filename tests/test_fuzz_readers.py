"""Fuzz the readers: random and mutated files either parse to what a slow reference parser
returns, or raise a ValueError that names a line the reference finds wrong.

The reference parsers below are written for clarity, one line and one token at a time,
straight from the format descriptions in ``xmlc.data.xmc`` and ``xmlc.data.tables``; they share no
code with the vectorised readers. Hypothesis runs derandomized (a fixed sequence of
examples), so the test is deterministic and takes a few seconds.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from xmlc.data import tables
from xmlc.data.xmc import read_xmc

EXAMPLES = int(os.environ.get("XMLC_FUZZ_EXAMPLES", 200))   # e.g. 5000 for a long local hunt
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Bad(Exception):
    """The reference rejects the file; ``lines`` are the line numbers an error may name."""

    def __init__(self, lines):
        super().__init__(lines)
        self.lines = set(lines)


# ---------------------------------------------------------------------------------------
# The XMC / libsvm multilabel text format, by the book

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)
SEPARATORS = {ord(c) for c in " \t\r\v\f"}   # whitespace between tokens
F32_MAX = float(np.finfo(np.float32).max)


def number(token: bytes) -> float:
    text = token.decode("ascii", "replace")
    if not NUMBER.fullmatch(text):
        raise ValueError(token)
    return float(text)


def index(token: bytes, bound) -> int:
    value = number(token)
    if not (value >= 0 and value == math.floor(value) and value < (bound if bound is not None else 2**53)):
        raise ValueError(token)
    return int(value)


def reference_xmc_line(line: bytes, L, D):
    """(labels, {feature: value}) of one example line; ValueError if it is malformed."""
    if line in (b"", b"\r"):
        raise ValueError("empty line")
    if any(byte < 32 and byte not in SEPARATORS for byte in line):
        raise ValueError("control byte")
    words = [(m.start(), m.group()) for m in re.finditer(rb"[^\x00-\x20]+", line)]
    labels, features = [], {}
    for position, word in words:
        if word.count(b":") == 1:
            if b"," in word:
                raise ValueError("comma in a pair")
            left, right = word.split(b":")
            f = index(left, D)
            value = number(right)
            with np.errstate(over="ignore"):   # a float64 past float32's range casts to inf: that is the check
                as_float32 = np.float32(value)
            if not math.isfinite(value) or not math.isfinite(as_float32):
                raise ValueError("not finite as float32")
            if f in features:
                raise ValueError("duplicate feature")
            features[f] = np.float32(value)
        elif word.count(b":") == 0 and position == 0:
            for piece in word.split(b","):
                label = index(piece, L)
                if label in labels:
                    raise ValueError("duplicate label")
                labels.append(label)
        else:
            raise ValueError("malformed word")
    return labels, features


def reference_xmc(raw: bytes):
    """(labels per line, features per line, D, L) or raise Bad(lines that may be named)."""
    if not raw.strip(b"\r\n"):
        raise Bad({None})   # the file is empty: no line to name
    first, newline, rest = raw.partition(b"\n")
    parts = first.split()
    header = None
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        header = tuple(int(p) for p in parts)
        body, first_line_no = rest, 2
    else:
        body, first_line_no = raw, 1
    body = body.rstrip(b"\r\n")
    lines = body.split(b"\n") if body else []
    if header is not None and header[0] != len(lines):
        raise Bad({first_line_no + min(len(lines), header[0])})
    L = D = None
    if header is not None:
        _, D, L = header
    parsed, bad = [], set()
    for i, line in enumerate(lines):
        try:
            parsed.append(reference_xmc_line(line, L, D))
        except ValueError:
            bad.add(first_line_no + i)
    if bad:
        raise Bad(bad)
    if L is None:
        L = 1 + max((max(labels, default=-1) for labels, _ in parsed), default=-1)
        D = 1 + max((max(features, default=-1) for _, features in parsed), default=-1)
    return parsed, D, L


def check_xmc(tmp_path: Path, raw: bytes) -> str:
    path = tmp_path / "fuzz.txt"
    path.write_bytes(raw)
    try:
        expected = reference_xmc(raw)
    except Bad as bad:
        with pytest.raises(ValueError) as err:
            read_xmc(path)
        message = str(err.value)
        assert str(path) in message, message
        if bad.lines == {None}:
            assert "empty" in message, message
        else:
            named = re.search(r": line (\d+): ", message)
            assert named and int(named.group(1)) in bad.lines, (message, bad.lines)
        return "rejected"
    data = read_xmc(path)
    parsed, D, L = expected
    assert (len(data), data.num_features, data.num_labels) == (len(parsed), D, L)
    for row, (labels, features) in enumerate(parsed):
        assert data.labels[row].indices.tolist() == sorted(labels)
        got = data.features[row]
        assert dict(zip(got.indices.tolist(), got.data.tolist())) == {f: float(v) for f, v in features.items()}
    return "parsed"


# Files: valid lines, some tokens replaced by edge cases, then random byte edits.
label_lists = st.lists(st.integers(0, 12), max_size=4).map(lambda ls: ",".join(map(str, ls)))
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.sampled_from(["0", "1", "-0", ".5", "5.", "1e40", "-3.5e38", "3.4028235e38", "1e-50", "nan",
                     "inf", "-Infinity", "1e", "0x1F", "1_0", "", "+", "e5", "--1", "1.5.2"]),
)
indices = st.one_of(st.integers(0, 20).map(str), st.sampled_from(["1.0", "1e1", "-1", "1.5", "", "x", "-0"]))
pairs = st.tuples(indices, values).map(lambda p: f"{p[0]}:{p[1]}")
lines = st.tuples(st.one_of(label_lists, st.just("")), st.lists(pairs, max_size=5)).map(
    lambda t: (t[0] + " " + " ".join(t[1])) if t[0] or not t[1] else " " + " ".join(t[1]))
NOISE = b" \t\r\n:,.-+e0123456789nax\x00\x01\xc3\xa9"


@st.composite
def xmc_files(draw) -> bytes:
    body = draw(st.lists(lines, max_size=6))
    text = "\n".join(body)
    if draw(st.booleans()):
        n = len(body) + draw(st.sampled_from([0, 0, 0, 1, -1]))
        text = f"{max(n, 0)} {draw(st.integers(0, 25))} {draw(st.integers(0, 15))}\n" + text
    raw = bytearray((text + draw(st.sampled_from(["", "\n", "\r\n", "\n\n"]))).encode())
    for _ in range(draw(st.integers(0, 3))):   # mutations: replace, insert or delete one byte
        if not raw:
            break
        at = draw(st.integers(0, len(raw) - 1))
        kind = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = NOISE[draw(st.integers(0, len(NOISE) - 1))]
        if kind == "replace":
            raw[at] = byte
        elif kind == "insert":
            raw.insert(at, byte)
        else:
            del raw[at]
    return bytes(raw)


@FUZZ
@given(raw=xmc_files())
def test_xmc_reader_matches_the_reference(tmp_path, raw):
    event(check_xmc(tmp_path, raw))   # --hypothesis-show-statistics: about 20% parse, 80% are rejected


@pytest.mark.parametrize("raw", [
    b"", b"\n", b"0 1:1\n1 2:1e40\n", b"0 1:1\x012:1\n", b"0 1:1 \x00\n", b"0 1:nan(1)\n",
    b"2 5 3\n0 1:1\n", b"0 5 3\n", b"1,,2 1:1\n", b" 1:2 3:4\n0 1:1\n", b"\n0 1:1\n",
])
def test_xmc_reader_edge_cases(tmp_path, raw):
    check_xmc(tmp_path, raw)


# ---------------------------------------------------------------------------------------
# Text tables (xmlc.data.tables): CSV, JSON lines, LibMultiLabel


def reference_lines(raw: bytes):
    """(line number, text) of a file's lines split at b"\\n" (newline kept), UTF-8, BOM dropped;
    text is None for a line that is not UTF-8 (a reader must stop there when it gets to it)."""
    out = []
    for number, line in enumerate(_split_keep(raw), 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and number == 1 and text.startswith("\ufeff"):
            text = text[1:]
        out.append((number, text))
    return out


def _split_keep(raw: bytes) -> list[bytes]:
    pieces = raw.split(b"\n")
    lines = [p + b"\n" for p in pieces[:-1]]
    return lines + ([pieces[-1]] if pieces[-1] else [])


def reference_csv(raw: bytes, sep: str = "|"):
    """Rows (text, labels) of a headerless 2-column CSV (text, labels), read character by
    character as RFC 4180 says: quotes double inside quoted fields; anything after a closing
    quote but a comma or the line end is an error; an unquoted \\r or \\n ends the record and
    only \\r / \\n may follow on that line (so \\r\\n and old-Mac \\r endings both work). Blank
    records are skipped; a record with one field, or more fields than the first record, is an
    error at its first line."""
    width = 0
    chars = [(number, ch) for number, text in reference_lines(raw) for ch in (text if text is not None else [None])]
    rows, i = [], 0
    while i < len(chars):
        start = chars[i][0]
        fields, field, state = [], "", "start"
        while True:
            if i < len(chars) and chars[i][1] is None:
                raise Bad({chars[i][0]})                         # not UTF-8
            number, ch = chars[i] if i < len(chars) else (None, None)
            i += 1
            if state == "quoted":
                if ch is None:
                    raise Bad({start})                           # unexpected end of data
                if ch == '"':
                    state = "closed"
                else:
                    field += ch
                continue
            if state == "closed" and ch == '"':
                field, state = field + '"', "quoted"
            elif ch == '"' and state == "start":
                state = "quoted"
            elif ch == ",":
                fields.append(field)
                field, state = "", "start"
            elif ch in ("\r", "\n", None):
                if fields or state != "start":
                    fields.append(field)
                while ch is not None and ch != "\n" and i < len(chars) and chars[i][0] == number:
                    ch = chars[i][1]
                    i += 1
                    if ch not in ("\r", "\n"):
                        raise Bad({start})                       # text after a \r that ended the record
                break
            elif state == "closed":
                raise Bad({start})                               # text after a closing quote
            else:
                field, state = field + ch, "plain"
        if not fields:
            continue                                             # a blank line
        if len(fields) < 2:
            raise Bad({start})
        width = width or len(fields)                             # the first row's fields: no more after it
        if len(fields) > width:
            raise Bad({start})
        rows.append((fields[0], [p.strip() for p in fields[1].split(sep) if p.strip()]))
    return rows


def reference_jsonl(raw: bytes, sep: str = "|"):
    rows = []
    for number, text in reference_lines(raw):
        if text is None:
            raise Bad({number})
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            raise Bad({number}) from None
        if not (isinstance(obj, dict) and isinstance(obj.get("text"), str) and "labels" in obj):
            raise Bad({number})
        labels = obj["labels"]
        if isinstance(labels, list):
            labels = [str(v).strip() for v in labels if str(v).strip()]
        elif isinstance(labels, (str, int)):
            labels = [p.strip() for p in str(labels).split(sep) if p.strip()]
        elif labels is None:
            labels = []
        else:
            raise Bad({number})
        rows.append((obj["text"], labels))
    return rows


def reference_libmultilabel(raw: bytes):
    rows, width = [], 0
    for number, text in reference_lines(raw):
        if text is None:
            raise Bad({number})
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) not in (2, 3):
            raise Bad({number})
        width = width or len(fields)    # the first line's layout holds for the file
        if len(fields) != width:
            raise Bad({number})
        rows.append((fields[-1], fields[-2].split()))
    return rows


def check_table(tmp_path: Path, raw: bytes, fmt: str) -> str:
    path = tmp_path / {"table": "fuzz.csv", "jsonl": "fuzz.jsonl", "libmultilabel": "fuzz.txt"}[fmt]
    path.write_bytes(raw)
    read = {"table": lambda: tables.read_table(path, text_column=0, labels_column=1, label_sep="|", header=False),
            "jsonl": lambda: tables.read_jsonl(path, label_sep="|"),
            "libmultilabel": lambda: tables.read_libmultilabel(path)}[fmt]
    reference = {"table": reference_csv, "jsonl": reference_jsonl, "libmultilabel": reference_libmultilabel}[fmt]
    try:
        expected = reference(raw)
    except Bad as bad:
        with pytest.raises(ValueError) as err:
            read()
        message = str(err.value)
        named = re.search(r": line (\d+): ", message)
        assert str(path) in message and named and int(named.group(1)) in bad.lines, (message, bad.lines)
        return "rejected"
    split = read()
    assert list(zip(split.texts, split.labels)) == expected
    return "parsed"


TABLE_NOISE = ['"', ",", "\n", "\r", "\t", "|", " ", "{", "}", ":", "é", "\ufeff", b"\xff", b"\xc3"]
cells = st.text(alphabet=st.sampled_from(['a', 'b', ' ', ',', '"', '|', '\n', 'é']), max_size=6)
label_cells = st.text(alphabet=st.sampled_from(['a', 'b', ' ', ',', '"', '\n', 'é']), max_size=6)


def csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') or not text else text


@st.composite
def table_files(draw, fmt: str) -> bytes:
    rows = draw(st.lists(st.tuples(cells, st.lists(label_cells, max_size=3)),
                         max_size=5))
    # rows with a field too many (an unquoted comma in the text) or too few (no labels cell)
    shapes = [draw(st.sampled_from(["whole"] * 4 + ["extra", "missing"])) for _ in rows]
    if fmt == "table":
        lines = [{"whole": f"{csv_cell(text)},{csv_cell('|'.join(labels))}",
                  "extra": f"{csv_cell(text)},{csv_cell(text)},{csv_cell('|'.join(labels))}",
                  "missing": csv_cell(text)}[shape] for (text, labels), shape in zip(rows, shapes)]
    elif fmt == "jsonl":
        lines = [json.dumps({"text": text, "labels": draw(st.sampled_from([labels, "|".join(labels)]))},
                            ensure_ascii=draw(st.booleans())) for text, labels in rows]
    else:
        ids = draw(st.booleans())   # one layout per file; a missing or extra field on some rows
        lines = ["\t".join(([str(n)] if ids else [])
                           + [" ".join(l.replace("\n", " ") for l in labels), text.replace("\n", " ").replace("\t", " ")]
                           + (["x"] if shape == "extra" else []))
                 for n, ((text, labels), shape) in enumerate(zip(rows, shapes))]
        lines = [line.rsplit("\t", 1)[0] if shape == "missing" else line for line, shape in zip(lines, shapes)]
    raw = bytearray(("\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))).encode())
    for _ in range(draw(st.integers(0, 3))):   # mutations: replace, insert or delete a few bytes
        if not raw:
            break
        at = draw(st.integers(0, len(raw) - 1))
        noise = draw(st.sampled_from(TABLE_NOISE))
        noise = noise if isinstance(noise, bytes) else noise.encode()
        kind = draw(st.sampled_from(["replace", "insert", "delete"]))
        if kind == "delete":
            del raw[at]
        else:
            raw[at:at + (kind == "replace")] = noise
    return bytes(raw)


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))
@given(data=st.data())
@pytest.mark.parametrize("fmt", ["table", "jsonl", "libmultilabel"])
def test_table_readers_match_the_reference(tmp_path, fmt, data):
    event(check_table(tmp_path, data.draw(table_files(fmt)), fmt))


@FUZZ
@given(rows=st.lists(st.lists(st.sampled_from(["a", "b", "c|d", "10", "é", "x y"]), max_size=4), min_size=1,
                     max_size=30),
       data=st.data())
def test_label_vocabulary_round_trips_under_reordering(rows, data):
    """A run's vocabulary (its names, as a checkpoint keeps them) encodes the same rows in another
    order to the same label sets by name: columns never change meaning with the row order."""
    from xmlc.data.labels import LabelVocab

    run = LabelVocab.build(rows)
    order = data.draw(st.permutations(range(len(rows))))
    again = LabelVocab.build([rows[i] for i in order], names=run.names)   # what resume/evaluate/predict do
    Y, unseen = again.encode([rows[i] for i in order])
    assert not unseen and again.names == run.names
    for k, i in enumerate(order):
        assert {run.names[j] for j in Y[k].indices} == set(rows[i])
