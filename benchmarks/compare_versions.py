"""Before/after: the library at a git revision against the working tree, same data, same process.

    python benchmarks/compare_versions.py --rev 3463ca6 --cases metrics,calibrate,losses

The old ``xmlc/metrics.py``, ``calibrate.py`` and ``losses.py`` come from ``git show REV:...``
into a temporary package ``xmlc_old`` (their imports of each other rewritten to it; every
other module is the current ``xmlc``). Each call runs old then new, then new then old
(alternating), ``--repeats`` pairs; the ratio column is the median of the per-pair ratios
before/after (> 1: the new code is faster), and the largest RSS above the call's starting RSS
(bench_metrics.timed). Results are compared too: "identical" means equal
to the last bit (NaN equal to NaN). Data: bench_metrics.make_data (a weak model's scores) for
metrics and calibration, bench_losses.make_batch for the losses. Torch at 1 thread.
Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
SWAPPED = ("metrics", "calibrate", "losses")


def old_package(rev: str, into: Path):
    """Import ``xmlc/{metrics,calibrate,losses}.py`` at ``rev`` as ``xmlc_old.*``."""
    pkg = into / "xmlc_old"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in SWAPPED:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:xmlc/{name}.py"],
                             capture_output=True, text=True, check=True).stdout
        for other in SWAPPED:
            src = src.replace(f"from xmlc.{other} import", f"from xmlc_old.{other} import")
        (pkg / f"{name}.py").write_text(src)
    sys.path.insert(0, str(into))
    return {name: importlib.import_module(f"xmlc_old.{name}") for name in SWAPPED}


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def pairs(old, new, repeats: int):
    """Interleaved pairs, alternating the order. Returns per side (times, peak extra bytes,
    last result) and the per-pair ratios old/new."""
    from bench_metrics import timed  # RSS sampled every 2 ms above the RSS at call start
    sides = [([], [], None), ([], [], None)]
    ratios = []
    for r in range(repeats):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            dt, peak, out = timed((old, new)[which])
            times, peaks, _ = sides[which]
            times.append(dt)
            peaks.append(peak)
            sides[which] = (times, peaks, out)
        ratios.append(sides[0][0][-1] / sides[1][0][-1])
    return sides, ratios


def metric_cases(old, new, args):
    from bench_metrics import make_data
    s, y = make_data(args.n, args.labels)
    st = torch.from_numpy(s)
    om, nm, oc, nc = old["metrics"], new["metrics"], old["calibrate"], new["calibrate"]
    cases = {}
    if "metrics" in args.cases:
        for avg in ("macro", "micro"):
            cases[f"average_precision {avg}"] = (
                lambda m=om, a=avg: float(m.average_precision(st, y, average=a)),
                lambda m=nm, a=avg: float(m.average_precision(st, y, average=a)))
        cases["evaluate_all (ks 1,3,5)"] = (lambda: om.evaluate_all(st, y), lambda: nm.evaluate_all(st, y))
    if "calibrate" in args.cases:
        for mp in (1, 5):
            cases[f"fit_thresholds(method='f1', min_positives={mp})"] = (
                lambda c=oc, mp=mp: c.fit_thresholds(st, y, method="f1", min_positives=mp),
                lambda c=nc, mp=mp: c.fit_thresholds(st, y, method="f1", min_positives=mp))
    return cases


def loss_cases(old, new, args):
    from bench_losses import make_batch
    ol, nl = old["losses"], new["losses"]
    cases = {}
    for batch, num_labels in ((256, 7900), (1024, 30000)):
        x, y = make_batch(batch, num_labels)

        def run(lib, name, x=x, y=y):  # this size's batch (not the loop variables' last value)
            def call():
                x.grad = None
                loss = {"focal gamma=2": lambda: lib.focal_loss(x, y, gamma=2.0),
                        "focal gamma=1.5": lambda: lib.focal_loss(x, y, gamma=1.5),
                        "asymmetric (1, 4, clip 0.05)": lambda: lib.asymmetric_loss(x, y, gamma_pos=1.0),
                        "ohem(bce) element 0.25": lambda: lib.ohem(
                            lib.bce_with_logits(x, y, reduction="none"), y, keep_ratio=0.25),
                        "ohem(bce) element 0.25 keep_positives": lambda: lib.ohem(
                            lib.bce_with_logits(x, y, reduction="none"), y, keep_ratio=0.25, keep_positives=True),
                        }[name]()
                loss.backward()
                return loss.detach(), x.grad.clone()
            return call

        for name in ("focal gamma=2", "focal gamma=1.5", "asymmetric (1, 4, clip 0.05)",
                     "ohem(bce) element 0.25", "ohem(bce) element 0.25 keep_positives"):
            cases[f"{name}, fwd+bwd {batch} x {num_labels}"] = (run(ol, name), run(nl, name))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", required=True, help="git revision of the 'before' code")
    ap.add_argument("--cases", default="metrics,calibrate,losses")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--labels", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3, help="pairs per metric/calibration call")
    ap.add_argument("--loss-repeats", type=int, default=11, help="pairs per loss call")
    ap.add_argument("--only", default="", help="run only the calls whose name contains this text")
    args = ap.parse_args()
    torch.set_num_threads(1)
    new = {name: importlib.import_module(f"xmlc.{name}") for name in SWAPPED}
    with tempfile.TemporaryDirectory() as tmp:
        old = old_package(args.rev, Path(tmp))
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        print(f"before: {args.rev}, after: {head} + working tree; torch {torch.__version__}, 1 thread\n")
        print("| call | before s | after s | before/after (median of pairs) | pairs | before / after peak extra MiB | identical |")
        print("|---|---:|---:|---:|---:|---:|---|")
        groups = []
        if {"metrics", "calibrate"} & set(args.cases.split(",")):
            groups.append((metric_cases, args.repeats))
        if "losses" in args.cases:
            groups.append((loss_cases, args.loss_repeats))
        for make, repeats in groups:
            for name, (fo, fn) in make(old, new, args).items():
                if args.only not in name:
                    continue
                fo(), fn()  # warm-up
                ((t_old, p_old, ro), (t_new, p_new, rn)), ratios = pairs(fo, fn, repeats)
                print(f"| {name} | {statistics.median(t_old):.3f} | {statistics.median(t_new):.3f} | "
                      f"{statistics.median(ratios):.2f}x | {repeats} | {max(p_old) / 2**20:.0f} / "
                      f"{max(p_new) / 2**20:.0f} | {same(ro, rn)} |", flush=True)


if __name__ == "__main__":
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":  # see bench_metrics.py: honest RSS peaks
        os.execve(sys.executable, [sys.executable] + sys.argv,
                  {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"})
    main()
