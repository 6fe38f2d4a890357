"""Predict label names: ``python -m xmlc.predict --checkpoint RUN [--data FILE | --text "doc" ...] [--out OUT]``.

Input, one of:

- ``--data FILE``: any format the run could train on (a ``.csv``/``.tsv``/``.jsonl`` table,
  LibMultiLabel text, ``.npy``/``.npz`` features, XMC), read with the checkpoint's ``data``
  keys (``text_column``, ``format``, ...); change them with overrides such as
  ``data.text_column=body``. Labels in FILE, if any, are ignored (a table needs no labels column).
- ``--text "one document"`` (repeatable): raw text for a raw-text run.
- neither: one document per line on standard input (``--data -`` too).

Output (``--out``, default standard output; ``--format jsonl | csv``, default from the
extension of ``--out``, else jsonl), one record per input row, in input order::

    {"row": 0, "top_k": [[name, probability], ...], "predicted": [name, ...]}

``top_k`` holds the K most probable labels, best first; ``predicted`` the labels whose
probability reaches the checkpoint's calibrated per-label threshold (0.5 when it has none;
``--threshold 0.5`` forces a global one); ``"no_features": true`` marks a row with no feature the
model knows (empty text, only unknown words): its prediction is the model's prior (their count
goes to standard error). CSV has the columns ``row``, ``predicted`` (names joined by ``|``),
``top_k`` (``name:probability`` joined by ``|``; a name holding ``|``, ``:``, ``"`` or ``\\`` is
written as a JSON string, ``"a|b"``) and ``no_features`` (``true`` or empty). Labels are the
names the run was trained with (tables, ``data.label_names``); runs on XMC files print label
indices unless ``--label-names FILE`` (one name per line) is given. Rows are scored in chunks,
so memory does not grow with FILE beyond its raw text.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from xmlc._json import dumps
from xmlc.api import Classifier, empty_rows
from xmlc.checkpoint import checkpoint_path
from xmlc.cli import INPUT_ERRORS, ExitStatus, device_name, positive_int, probability, report_error
from xmlc.config import ConfigError, apply_overrides
from xmlc.inference import check_finite_scores
from xmlc.data.load import read_for_model
from xmlc.run import RunArtifact
from xmlc.data.labels import read_label_names
from xmlc.errors import InputError

__all__ = ["main", "predict_file", "write_predictions"]

CHUNK = 8192   # rows featurised and scored at a time


def write_predictions(clf: Classifier, inputs, out, *, top_k: int = 5, fmt: str = "jsonl",
                      batch_size: int | None = None) -> int:
    """Score ``inputs`` (a list of texts, or a feature matrix / :class:`xmlc.data.XMCData`) chunk
    by chunk and write one record per row to the text stream ``out``; returns the row count."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"--format must be jsonl or csv, got {fmt!r}")
    if top_k < 0:
        raise ValueError(f"--top-k must be >= 0, got {top_k}")
    features = getattr(inputs, "features", inputs)   # XMCData -> its (already normalised) matrix
    prepared = features is not inputs
    n = features.shape[0] if hasattr(features, "shape") else len(features)
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(["row", "predicted", "top_k", "no_features"])
    empty_count = 0
    for start in range(0, n, CHUNK):
        chunk = features[start:start + CHUNK] if prepared else clf.features(features[start:start + CHUNK])
        scores = clf.scores_of_features(chunk, batch_size=batch_size)
        check_finite_scores(scores, first_row=start)   # never a NaN (invalid JSON) in the output
        empty = empty_rows(chunk)
        empty_count += int(empty.sum())
        for row, record in enumerate(clf.rows(scores, top_k=top_k, empty=empty), start):
            if writer is not None:
                writer.writerow([row, "|".join(csv_name(name) for name in record["predicted"]),
                                 "|".join(f"{csv_name(name)}:{p:.6g}" for name, p in record["top_k"]),
                                 "true" if record.get("no_features") else ""])
            else:
                out.write(dumps({"row": row, "top_k": [list(t) for t in record["top_k"]],
                                 "predicted": record["predicted"]} | _flag(record)) + "\n")
    if empty_count:
        print(f"note: {empty_count:,} of {n:,} rows have no feature the model knows (empty, or only unknown "
              f"words): their predictions are the model's prior, flagged \"no_features\": true", file=sys.stderr)
    return n


def _flag(record: dict) -> dict:
    return {"no_features": True} if record.get("no_features") else {}


def csv_name(name) -> str:
    """A label name in predict's CSV cells, where ``|`` separates names and ``:`` a probability: a
    name holding ``|``, ``:``, ``"`` or ``\\`` is written as a JSON string (``"a|b"``)."""
    name = str(name)
    return json.dumps(name, ensure_ascii=False) if any(c in name for c in '|:"\\') else name


def predict_file(checkpoint: str | Path, data_path: str | Path | None, out_path: str | Path | None, *,
                 top_k: int = 5, threshold: float | None = None, label_names: list[str] | None = None,
                 batch_size: int | None = None, device: str = "cpu", texts: list[str] | None = None,
                 fmt: str | None = None, overrides: list[str] = ()) -> int:
    """Predict for ``data_path`` (or ``texts``; ``data_path`` "-" or None: standard input) and
    write to ``out_path`` (None: standard output); returns the number of rows."""
    clf = Classifier(RunArtifact.load(checkpoint, in_run_dir="best.pt", mmap=True), device=device, threshold=threshold,
                     source=str(checkpoint_path(checkpoint, "best.pt")))
    if label_names is not None:
        if len(label_names) != len(clf.label_names):
            raise ValueError(f"--label-names has {len(label_names)} names, the model has {len(clf.label_names)} labels")
        clf.label_names = list(label_names)
    dcfg = apply_overrides(clf.config, list(overrides)).data
    notes: list[str] = []
    if texts is not None:
        inputs = list(texts)
    elif data_path is None or str(data_path) == "-":
        inputs = read_stdin_lines()
    else:
        if not Path(data_path).is_file():
            raise FileNotFoundError(f"--data: file not found: {data_path}")
        inputs = read_for_model(data_path, dcfg, key="--data", num_features=clf.num_features,
                                label_names=clf.label_names if clf.has_names else None,
                                featurizer=clf.featurizer, with_labels=False, notes=notes)
    for note in notes:
        print(note, file=sys.stderr)
    fmt = fmt or ("csv" if out_path is not None and str(out_path).lower().endswith(".csv") else "jsonl")
    if out_path is None:
        return write_predictions(clf, inputs, sys.stdout, top_k=top_k, fmt=fmt, batch_size=batch_size)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out_path, "w", newline="") as out:
            return write_predictions(clf, inputs, out, top_k=top_k, fmt=fmt, batch_size=batch_size)
    except BaseException:   # no partial file that could pass for a complete one
        out_path.unlink(missing_ok=True)
        raise


def read_stdin_lines() -> list[str]:
    """Standard input's lines, UTF-8 (as ``--data`` reads files): undecodable bytes name the line."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:   # a text stream that is not a terminal or pipe (tests, notebooks)
        return [line.rstrip("\r\n") for line in sys.stdin]
    lines = []
    for number, raw in enumerate(stream, 1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as exc:
            raise InputError(f"standard input: line {number}: bytes that are not UTF-8 at byte {exc.start} of "
                             f"the line ({raw[exc.start:exc.start + 4]!r}); give UTF-8 text") from None
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmlc.predict", description=__doc__.split("\n\n")[0],
                                     epilog="overrides: data.<key>=value for reading --data (default: the "
                                            "checkpoint's data section), e.g. data.text_column=body")
    parser.add_argument("--checkpoint", required=True, help="a .pt checkpoint or a run directory (uses best.pt)")
    parser.add_argument("--data", help="input file (any training format; labels ignored); '-' or "
                                       "omitted with no --text: text lines on standard input")
    parser.add_argument("--text", action="append", help="one document (repeatable)")
    parser.add_argument("--top-k", type=int, default=5, help="labels per row in top_k (default 5)")
    parser.add_argument("--out", help="output file (default: standard output)")
    parser.add_argument("--format", choices=("jsonl", "csv"), help="output format (default: from --out's "
                                                                    "extension, else jsonl)")
    parser.add_argument("--threshold", type=probability, help="one global probability threshold instead of "
                                                        "the checkpoint's calibrated ones")
    parser.add_argument("--label-names", help="file with one label name per line (runs without names)")
    parser.add_argument("--batch-size", type=positive_int)
    parser.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("overrides", nargs="*", metavar="data.key=value")
    args = parser.parse_args(argv)
    checkpoint = checkpoint_path(args.checkpoint, "best.pt")   # a run directory means its best model
    try:
        bad = [o for o in args.overrides if not o.startswith("data.")]
        if bad:
            raise ConfigError(f"predict takes data.<key>=value overrides only; got {bad[0]!r}")
        if args.data is not None and args.text:
            raise ConfigError("give --data or --text, not both")
        names = read_label_names(args.label_names) if args.label_names else None
        n = predict_file(checkpoint, args.data, args.out, top_k=args.top_k, threshold=args.threshold,
                         label_names=names, batch_size=args.batch_size, device=args.device, texts=args.text,
                         fmt=args.format, overrides=args.overrides)
    except Exception as exc:   # bad input: one line and its status (xmlc.cli); anything else: traceback
        return report_error(exc, INPUT_ERRORS)
    if args.out is not None:
        print(f"wrote {n:,} predictions to {args.out}", file=sys.stderr)
    return ExitStatus.OK


if __name__ == "__main__":
    sys.exit(main())
