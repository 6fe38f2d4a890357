"""``python -m xmlc.stats FILE [--json] [--plot PNG]``: the label report of a data file.

A command: it sits on top of the library (data, stats, figures) like ``xmlc.train``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xmlc.cli import ExitStatus
from xmlc.data import SYNTHETIC_PRESETS, read_xmc, synthetic_preset
from xmlc.data.tables import detect_format
from xmlc.eval.figures import long_tail, save_png
from xmlc.stats import format_report, frequency_buckets, label_and_example_counts, label_report
from xmlc._json import dumps


def _load(source: str):
    if source.startswith("synthetic:"):
        name = source.split(":", 1)[1]
        if name not in SYNTHETIC_PRESETS:
            raise SystemExit(f"unknown synthetic preset {name!r}; valid: {sorted(SYNTHETIC_PRESETS)}")
        return synthetic_preset(name)
    if Path(source).is_file():
        fmt, why = detect_format(source)
        if fmt != "xmc":
            raise ValueError(f"{source}: python -m xmlc.stats reads XMC / libsvm multilabel files only, and this "
                             f"one reads as {fmt} ({why}); train on it and open the run's report "
                             f"(python -m xmlc.report RUN) for its label statistics")
    return read_xmc(source)


def main(argv: list[str] | None = None) -> int:
    """``python -m xmlc.stats FILE [--json] [--plot PNG]``."""
    parser = argparse.ArgumentParser(
        prog="python -m xmlc.stats",
        description="Label report for an XMC / libsvm multilabel file (.gz ok) or synthetic:default / synthetic:seed.",
    )
    parser.add_argument("file", help="path, or synthetic:default / synthetic:seed")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--few", type=int, default=5, help="labels with 1..FEW positives are reported as few (default 5)")
    parser.add_argument("--plot", metavar="PNG", help="also draw the label long tail (positives per label, sorted, "
                        "with the neg/pos pos_weight range) into this PNG file")
    args = parser.parse_args(argv)
    try:
        data = _load(args.file)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return ExitStatus.USAGE
    report = label_report(data, few=args.few)
    if args.json:
        print(dumps({"file": args.file, **report}, indent=2))
    else:
        print(format_report(report, args.file))
    if args.plot:
        counts, num_examples = label_and_example_counts(data.labels)
        figure = long_tail(counts, num_examples, buckets=frequency_buckets(counts),
                           title=Path(args.file).name)
        try:
            path = save_png(figure, args.plot)
        except OSError as err:
            print(f"error: --plot {args.plot}: cannot write: {err}", file=sys.stderr)
            return ExitStatus.USAGE
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return ExitStatus.OK


if __name__ == "__main__":
    sys.exit(main())
