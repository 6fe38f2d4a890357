"""GPU: training and evaluation of the seed scenario, the DataLoader path against the device-resident
one, and exact AUPRC of a 20k x 4k matrix on the GPU, xmlc against torchmetrics.

Seed scenario: ``configs/seed.yaml`` (synthetic, 64,800 train / 7,200 validation rows, 7,900
labels, D = 5,000, MLP 512, batch 256). Per setting (batches from the ``DataLoader``: CSR rows
sliced on the host, pinned, copied every step; or from ``xmlc.data.DeviceLoader``: the split on
the GPU, batches gathered there; ``train.amp`` off / on) it trains one warm-up epoch, then:

* epoch (s) and examples/s: one timed epoch of ``xmlc.train.train_one_epoch`` (data loading
  included, as in a run);
* GPU busy: ``torch.profiler`` over ``--profile-steps`` steps, the summed time of the GPU's
  kernels and copies over the wall time of those steps (the profiler's own overhead makes this
  a slight underestimate), and the GPU ops launched per step (of which host-to-device copies);
* eval (s): validation as a run does it after each epoch (scores, metrics at 0.5, per-label F1
  thresholds, metrics at them) with the metrics on the GPU (``Evaluator.calibrate``: scores stay
  on the device), against the same on the host (scores copied to the CPU, the numpy engine);
* peak GPU memory (``torch.cuda.max_memory_allocated``) over the timed epoch and both evaluations.

AUPRC: exact macro and micro AUPRC of 20,000 x 4,000 scores (power-law label frequencies, a weak
model's scores) on the GPU: ``xmlc.eval.metrics.average_precision`` (labels as CSR, as a run holds
them) against ``torchmetrics.functional.classification.multilabel_average_precision`` (dense
targets on the GPU, ``thresholds=None``: exact), and xmlc's host engine on the same scores, the
median of ``--repeats`` calls each, with the largest difference of the values.

Prints Markdown; without a CUDA device it prints "no CUDA device" and exits with status 0.
Settings run in turn (a GPU is not shared the way the CPU box is).

    python benchmarks/bench_gpu.py [--profile-steps 50 --repeats 3 --text-rows 0]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from xmlc import data as xdata, losses  # noqa: E402
from xmlc.config import load_config  # noqa: E402
from xmlc.eval.calibrate import thresholds_for  # noqa: E402
from xmlc.eval.metrics import average_precision  # noqa: E402
from xmlc.eval.summary import threshold_metrics  # noqa: E402
from xmlc.inference import predict_scores  # noqa: E402
from xmlc.models import build_model  # noqa: E402
from xmlc.optim import build_optimizer, build_scheduler  # noqa: E402
from xmlc.run import LabelStats, Progress  # noqa: E402
from xmlc.train.distributed import DistEnv, ResumableSampler  # noqa: E402
from xmlc.train.epoch import train_one_epoch  # noqa: E402
from xmlc.train.evaluator import Evaluator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class _NoStop:
    requested = False


def sync() -> None:
    torch.cuda.synchronize()


def make_loaders(kind: str, train, val, batch_size: int, sampler, device):
    """(train loader, validation loader) of ``kind``: "DataLoader" or "device"."""
    val_rows = list(range(len(val)))
    if kind == "DataLoader":
        return (xdata.make_loader(train, batch_size, shuffle=False, sampler=sampler, pin_memory=True),
                xdata.make_loader(val, xdata.EVAL_BATCH_SIZE, shuffle=False, sampler=val_rows, pin_memory=True))
    return (xdata.DeviceLoader(train, batch_size, sampler=sampler, device=device),
            xdata.DeviceLoader(val, xdata.EVAL_BATCH_SIZE, sampler=val_rows, device=device))


def gpu_busy(step, steps: int) -> tuple[float, float, float]:
    """(kernel + copy time / wall time, GPU ops per step, host-to-device copies per step) of
    ``steps`` calls of ``step`` under ``torch.profiler``."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        step(steps)
        sync()
        wall_us = (time.perf_counter() - start) * 1e6
    gpu = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    busy_us = sum(e.time_range.elapsed_us() for e in gpu)
    h2d = sum(1 for e in gpu if "HtoD" in e.name or "Host to Device" in e.name)
    return busy_us / wall_us, len(gpu) / steps, h2d / steps


def host_calibrate(ev: Evaluator, model, loader, labels, device) -> None:
    """``Evaluator.calibrate`` as it ran before the metrics moved to the device: scores copied to
    the CPU, metrics with the numpy engine."""
    scores = predict_scores(model, loader, labels.shape[0], device=device)
    thresholds = thresholds_for(ev.ecfg, scores, labels, ev.label_stats.pos_weight)
    threshold_metrics(scores, labels, thresholds, ev.label_stats.buckets)
    ev.report(scores, labels)


def setting(cfg, train, val, device, kind: str, amp: bool, profile_steps: int) -> dict:
    """One row of the training table (see the module docstring)."""
    cfg.train.amp = amp
    torch.manual_seed(0)
    model = build_model(cfg.model, train.num_features, train.num_labels).to(device)
    optimizer = build_optimizer(cfg.optim, model)
    steps = -(-len(train) // cfg.data.batch_size)
    scheduler = build_scheduler(cfg.optim, optimizer, total_steps=steps * 3 + profile_steps)
    label_stats = LabelStats.of(train, cfg.loss)
    loss_fn = losses.build_loss(cfg.loss).to(device)
    env = DistEnv(device=device)
    sampler = ResumableSampler(train, env, seed=0, batch_size=cfg.data.batch_size)
    loader, val_loader = make_loaders(kind, train, val, cfg.data.batch_size, sampler, device)

    def run(batches) -> None:
        train_one_epoch(model, batches, loss_fn, optimizer, scheduler, progress=Progress(), tcfg=cfg.train,
                        grad_clip=cfg.optim.grad_clip, env=env, stop=_NoStop())

    run(loader)                                   # warm-up epoch
    sync()
    torch.cuda.reset_peak_memory_stats()
    sampler.set_epoch(1)
    start = time.perf_counter()
    run(loader)
    sync()
    epoch_s = time.perf_counter() - start
    sampler.set_epoch(2)
    busy, ops, h2d = gpu_busy(lambda n: run(itertools.islice(iter(loader), n)), profile_steps)
    ev = Evaluator(cfg.eval, label_stats, env)
    evals = {}
    for name, fn in (("device", lambda: ev.calibrate(model, val_loader, val.labels)),
                     ("host", lambda: host_calibrate(ev, model, val_loader, val.labels, device))):
        fn()                                      # warm-up
        sync()
        start = time.perf_counter()
        fn()
        sync()
        evals[name] = time.perf_counter() - start
    return {"epoch_s": epoch_s, "ex_s": len(train) / epoch_s, "busy": busy, "ops": ops, "h2d": h2d,
            "eval_device_s": evals["device"], "eval_host_s": evals["host"],
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20}


def training_table(args, device) -> None:
    cfg = load_config(ROOT / "configs" / "seed.yaml")
    cfg.train.log_every = 10**9
    train, val, _ = xdata.load_splits(cfg.data, seed=0)
    cases = [("seed scenario", cfg, train, val)]
    if args.text_rows:
        from bench_train import recipe_config, zipf_data
        text = zipf_data(args.text_rows + args.text_rows // 8, 50_000, 100)
        cut = args.text_rows
        part = lambda a, b: xdata.XMCData(text.features[a:b], text.labels[a:b], text.num_features, text.num_labels)
        cases.append(("text recipe, Zipf D = 50,000", recipe_config(), part(0, cut), part(cut, None)))
    print("| case | batches | AMP (bf16) | epoch (s) | examples/s | GPU busy | GPU ops / step (H2D copies) "
          "| eval, metrics on GPU (s) | eval, metrics on host (s) | peak GPU memory (MiB) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, case_cfg, tr, va), amp, kind in itertools.product(cases, (False, True), ("DataLoader", "device")):
        r = setting(case_cfg, tr, va, device, kind, amp, args.profile_steps)
        print(f"| {name} ({len(tr):,} rows) | {kind} | {'on' if amp else 'off'} | {r['epoch_s']:.2f} | "
              f"{r['ex_s']:,.0f} | {r['busy']:.0%} | {r['ops']:.0f} ({r['h2d']:.1f}) | {r['eval_device_s']:.2f} | "
              f"{r['eval_host_s']:.2f} | {r['peak_mib']:,.0f} |", flush=True)
        torch.cuda.empty_cache()


def auprc_data(n: int, l: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Power-law label frequencies (mean 1.5 % positives) and a weak model's float32 scores."""
    rng = np.random.default_rng(seed)
    p = (np.arange(l) + 1.0) ** -0.7
    p = np.minimum(p * 0.015 / p.mean(), 0.5)
    y = rng.random((n, l), dtype=np.float32) < p.astype(np.float32)
    z = rng.standard_normal((n, l), dtype=np.float32) * 1.5 + 3.0 * y - 4.0
    return torch.sigmoid(torch.from_numpy(z)).numpy(), y


def median_time(fn, repeats: int) -> tuple[float, object]:
    value = fn()                                  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        value = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def auprc_table(args, device) -> None:
    s, y = auprc_data(args.auprc_rows, args.auprc_labels)
    csr = sp.csr_matrix(y)
    scores, dense = torch.from_numpy(s).to(device), torch.from_numpy(y).to(device=device, dtype=torch.long)
    rows = {"xmlc, GPU (torch engine)": lambda avg: average_precision(scores, csr, average=avg),
            "xmlc, host (numpy engine)": lambda avg: average_precision(s, csr, average=avg)}
    try:
        from torchmetrics.functional.classification import multilabel_average_precision
        rows["torchmetrics, GPU (exact)"] = lambda avg: float(multilabel_average_precision(
            scores, dense, num_labels=s.shape[1], average=avg, thresholds=None))
    except ImportError:
        print("(torchmetrics is not installed: pip install torchmetrics, or the 'streaming' extra)\n")
    print(f"\nExact AUPRC of {s.shape[0]:,} x {s.shape[1]:,} scores, median of {args.repeats} calls:\n")
    print("| implementation | macro (s) | micro (s) | vs xmlc GPU (macro time) | macro value | micro value |")
    print("|---|---:|---:|---:|---:|---:|")
    base = None
    for name, fn in rows.items():
        (macro_s, macro), (micro_s, micro) = (median_time(lambda a=avg: fn(a), args.repeats) for avg in ("macro", "micro"))
        base = base or macro_s
        print(f"| {name} | {macro_s:.3f} | {micro_s:.3f} | {macro_s / base:.1f}x | {macro:.6f} | {micro:.6f} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile-steps", type=int, default=50, help="steps under the profiler per setting")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per AUPRC implementation")
    parser.add_argument("--auprc-rows", type=int, default=20_000)
    parser.add_argument("--auprc-labels", type=int, default=4_000)
    parser.add_argument("--text-rows", type=int, default=0, help="also the text recipe on Zipf rows (0: skip)")
    parser.add_argument("--skip-training", action="store_true", help="only the AUPRC table")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured (this script times the GPU path)")
        return
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}\n")
    if not args.skip_training:
        training_table(args, device)
    auprc_table(args, device)


if __name__ == "__main__":
    main()
