"""Benchmark xmlc.losses against F.binary_cross_entropy_with_logits and a tutorial focal loss.

Prints three Markdown tables:

1. forward + backward time of each loss on random logits (B, L) with sparse targets, as the
   median of per-pair ratios to BCE. Each pair runs BCE and the candidate back to back, in
   alternating order (ABBA), so slow spells of a shared machine hit both sides alike.
2. peak memory of one forward + backward: the peak resident set size (VmHWM of
   /proc/self/status, reset through /proc/self/clear_refs) above the resident size just
   before the call, in a fresh process per case, with glibc told to return every large
   block to the system on free (MALLOC_MMAP_THRESHOLD_), so freed memory is not counted
   twice or hidden. It includes the logits' gradient (one B x L float32 tensor) and is also
   given in units of B x L float32 tensors.
3. the share of a full training step the loss takes: MLP 5,000-512-L (EmbeddingBag first
   layer, ReLU, Linear head), B=256, fused AdamW step (as xmlc.train); share = median loss forward + backward time
   on the same logits / median full step time.

4. each hand-written step inside the losses against the plain torch call it replaces, on the
   same tensors, in interleaved pairs: ratio = plain time / our time (median of pairs), so
   > 1 means the hand-written step is faster (``--tricks`` prints only this table).

Table 1 also times the plain references of the kernels in ``xmlc.kernels.focal`` (the published
formulas under autograd) beside the kernels; table 4 holds the rows of
``xmlc.kernels.select`` (the k largest mask, positives first) and the ``p ** 4`` step of
``xmlc.kernels.focal``. A kernel stays only while its row shows it beating its reference.

Usage:
    python benchmarks/bench_losses.py                 # all four tables (a few minutes)
    python benchmarks/bench_losses.py --tricks        # only table 4
    python benchmarks/bench_losses.py --quick         # small size only, fewer repetitions
    python benchmarks/bench_losses.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xmlc.kernels import focal as kfocal, select as kselect  # noqa: E402
from xmlc.losses import asymmetric_loss, bce_with_logits, focal_loss, ohem  # noqa: E402

POSITIVE_RATE = 130 / 7900  # the "seed" preset: ~130 labels per example of 7,900


def naive_focal(logits, targets, gamma=2.0, alpha=0.25):
    """The focal loss as tutorials (and torchvision.ops.sigmoid_focal_loss) write it: plain
    autograd through sigmoid, BCE and a power."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * loss).mean()


def _reference(x, y, **kw):
    """The plain reference of the focal kernel: the published formula under autograd."""
    return kfocal.focal_reference(x, y, pos_weight=None, weight=None, reduction="mean", **kw)


def candidates(num_labels: int) -> dict:
    pw = torch.full((num_labels,), 50.0)
    return {
        "BCE, F.binary_cross_entropy_with_logits (baseline)": lambda x, y: F.binary_cross_entropy_with_logits(x, y),
        "F.binary_cross_entropy_with_logits + pos_weight (reference)": lambda x, y: F.binary_cross_entropy_with_logits(
            x, y, pos_weight=pw
        ),
        "bce_with_logits + pos_weight": lambda x, y: bce_with_logits(x, y, pos_weight=pw),
        "focal_loss gamma=2": lambda x, y: focal_loss(x, y, gamma=2.0),
        "focal_loss gamma=2 alpha=0.25 + pos_weight": lambda x, y: focal_loss(x, y, gamma=2.0, alpha=0.25, pos_weight=pw),
        "focal_loss gamma=0.5": lambda x, y: focal_loss(x, y, gamma=0.5),
        "naive tutorial focal gamma=2 alpha=0.25": naive_focal,
        "reference focal gamma=2 alpha=0.25 (xmlc.kernels.focal.focal_reference, autograd)": lambda x, y: _reference(
            x, y, gamma_pos=2.0, gamma_neg=2.0, clip=0.0, alpha=0.25
        ),
        "asymmetric_loss (0, 4, clip 0.05)": lambda x, y: asymmetric_loss(x, y),
        "asymmetric_loss (1, 4, clip 0.05) + pos_weight": lambda x, y: asymmetric_loss(x, y, gamma_pos=1.0, pos_weight=pw),
        "reference asymmetric (0, 4, clip 0.05) (focal_reference, autograd)": lambda x, y: _reference(
            x, y, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, alpha=None
        ),
        "ohem(bce) element 0.25": lambda x, y: ohem(bce_with_logits(x, y, reduction="none"), y, keep_ratio=0.25),
        "ohem(focal) element 0.25": lambda x, y: ohem(focal_loss(x, y, reduction="none"), y, keep_ratio=0.25),
        "ohem(focal) element 0.25 keep_positives": lambda x, y: ohem(
            focal_loss(x, y, reduction="none"), y, keep_ratio=0.25, keep_positives=True
        ),
        "ohem(focal) example 0.25": lambda x, y: ohem(focal_loss(x, y, reduction="none"), y, keep_ratio=0.25, mode="example"),
    }


def make_batch(batch: int, num_labels: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(batch, num_labels, generator=g) * 2 - 3).requires_grad_(True)
    y = (torch.rand(batch, num_labels, generator=g) < POSITIVE_RATE).float()
    return x, y


def fwd_bwd(fn, x, y) -> float:
    x.grad = None
    t0 = time.perf_counter()
    fn(x, y).backward()
    return time.perf_counter() - t0


def time_table(sizes, reps: int) -> str:
    rows = ["| B x L | loss | median ms | median ratio to BCE | goal |", "|---|---|---:|---:|---|"]
    for batch, num_labels in sizes:
        x, y = make_batch(batch, num_labels)
        fns = candidates(num_labels)
        baseline = next(iter(fns.values()))
        for name, fn in fns.items():
            fwd_bwd(baseline, x, y), fwd_bwd(fn, x, y)  # warm-up
            ratios, times = [], []
            for r in range(reps):
                if r % 2 == 0:
                    tb, tc = fwd_bwd(baseline, x, y), fwd_bwd(fn, x, y)
                else:
                    tc, tb = fwd_bwd(fn, x, y), fwd_bwd(baseline, x, y)
                ratios.append(tc / tb)
                times.append(tc)
            goal = "<= 2x" if name.startswith("ohem") else ("<= 1.5x" if name.startswith(("focal", "asym")) else "")
            rows.append(
                f"| {batch} x {num_labels} | {name} | {statistics.median(times) * 1e3:.1f} | "
                f"{statistics.median(ratios):.2f} | {goal} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(rows)


# ------------------------------------------------------------------------------- memory


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def memory_child(batch: int, num_labels: int, name: str) -> None:
    fn = candidates(num_labels)[name]
    xs, ys = make_batch(8, num_labels)
    fwd_bwd(fn, xs, ys)  # lazy initialisation outside the measurement
    x, y = make_batch(batch, num_labels)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    fwd_bwd(fn, x, y)
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - before) / 1024}))


def memory_table(sizes, threads: int) -> str:
    rows = ["| B x L | loss | peak MiB above inputs | in B x L float32 tensors |", "|---|---|---:|---:|"]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(threads))
    for batch, num_labels in sizes:
        tensor_mib = batch * num_labels * 4 / 2**20
        for name in candidates(num_labels):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", f"{batch},{num_labels}", name],
                capture_output=True, text=True, env=env, check=True,
            )
            mib = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
            rows.append(f"| {batch} x {num_labels} | {name} | {mib:.0f} | {mib / tensor_mib:.1f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(rows)


# ------------------------------------------------------------------------------- training step


class MLP(nn.Module):
    """5,000-512-L: EmbeddingBag (sum, per-sample weights) + bias, ReLU, Linear head."""

    def __init__(self, num_features: int, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(num_features, hidden, mode="sum")
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, indices, offsets, weights):
        return self.head(torch.relu(self.bag(indices, offsets, per_sample_weights=weights) + self.bias))


def step_table(reps: int, batch: int = 256, num_features: int = 5000, num_labels: int = 7900, nnz: int = 100) -> str:
    g = torch.Generator().manual_seed(0)
    model = MLP(num_features, 512, num_labels)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # as xmlc.train
    indices = torch.randint(0, num_features, (batch * nnz,), generator=g)
    offsets = torch.arange(0, batch * nnz, nnz)
    weights = torch.rand(batch * nnz, generator=g)
    _, y = make_batch(batch, num_labels)
    fns = candidates(num_labels)
    names = [n for n in fns if not n.startswith(("F.", "bce_with", "naive", "reference", "focal_loss gamma=0.5", "ohem(bce)"))]

    def step(fn):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        fn(model(indices, offsets, weights), y).backward()
        opt.step()
        return time.perf_counter() - t0

    with torch.no_grad():
        logits = model(indices, offsets, weights)
    x = logits.detach().requires_grad_(True)
    rows = [
        f"| loss | full step ms (B={batch}, MLP {num_features}-512-{num_labels}, AdamW) | loss fwd+bwd ms | loss share of step |",
        "|---|---:|---:|---:|",
    ]
    for name in names:
        fn = fns[name]
        step(fn), fwd_bwd(fn, x, y)
        steps, losses = [], []
        for _ in range(reps):
            steps.append(step(fn))
            losses.append(fwd_bwd(fn, x, y))
        s, l = statistics.median(steps), statistics.median(losses)
        rows.append(f"| {name} | {s * 1e3:.1f} | {l * 1e3:.1f} | {100 * l / s:.0f}% |")
        print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(rows)


# ------------------------------------------------------------------------------- tricks


def _kthvalue_mask(values, k):
    """The plain way to the same mask as ``top_k_mask``: ``kthvalue`` for the threshold, one
    comparison, ties past k dropped by index (identical output)."""
    flat = values.reshape(-1)
    threshold = torch.kthvalue(flat, flat.numel() - k + 1).values
    mask = (flat >= threshold).to(values.dtype)
    surplus = int(mask.sum()) - k
    if surplus > 0:
        tied = torch.nonzero(flat == threshold).squeeze(1)
        mask[tied[tied.numel() - surplus:]] = 0.0
    return mask.view_as(values)


def _topk_mask(values, k):
    """``topk`` indices scattered into a mask (ties broken by topk, not by index)."""
    flat = values.reshape(-1)
    mask = torch.zeros_like(flat)
    mask[torch.topk(flat, k, sorted=False).indices] = 1.0
    return mask.view_as(values)


def trick_pairs(batch: int, num_labels: int):
    """(name, ours, plain) for each hand-written step of xmlc.kernels.select and xmlc.kernels.focal."""
    x, y = make_batch(batch, num_labels)
    x = x.detach()
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    k = loss.numel() // 4
    p = torch.sigmoid(x)
    rows = [
        ("k largest mask (radix select on sortable int32 keys) vs stable sort (top_k_mask_reference)",
         lambda: kselect.top_k_mask(loss, k), lambda: kselect.top_k_mask_reference(loss, k)),
        ("k largest mask (radix select on sortable int32 keys) vs torch.kthvalue",
         lambda: kselect.top_k_mask(loss, k), lambda: _kthvalue_mask(loss, k)),
        ("k largest mask (radix select on sortable int32 keys) vs torch.topk",
         lambda: kselect.top_k_mask(loss, k), lambda: _topk_mask(loss, k)),
        ("p ** 4 (_pow: two squarings) vs torch.pow", lambda: kfocal._pow(p, 4.0), lambda: torch.pow(p, 4.0)),
    ]
    rows.append(("positives first (addcmul with RANK_FIRST) vs masked_fill(inf)",
                 lambda: torch.addcmul(loss, y, y, value=kselect.RANK_FIRST[loss.dtype]),
                 lambda: loss.masked_fill(y > 0, float("inf"))))
    return rows


def tricks_table(sizes, reps_small: int, reps_large: int) -> str:
    rows = ["| B x L | step | ours ms | plain ms | plain / ours (median of pairs) | max abs difference |",
            "|---|---|---:|---:|---:|---:|"]
    for batch, num_labels in sizes:
        reps = reps_small if batch * num_labels < 5e6 else reps_large
        for name, ours, plain in trick_pairs(batch, num_labels):
            a, b = ours(), plain()
            if "topk" in name or "RANK_FIRST" in name:  # ties broken differently / other constant
                diff = float("nan")
            elif a.dtype.is_floating_point:
                diff = float((a.double() - b.double()).abs().max())
            else:
                diff = float((a != b).sum()) if a.shape == b.shape else float("inf")
            t_ours, t_plain, ratios = [], [], []
            for r in range(reps):
                for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                    t0 = time.perf_counter()
                    (ours, plain)[which]()
                    (t_ours, t_plain)[which].append(time.perf_counter() - t0)
                ratios.append(t_plain[-1] / t_ours[-1])
            rows.append(f"| {batch} x {num_labels} | {name} | {statistics.median(t_ours) * 1e3:.2f} | "
                        f"{statistics.median(t_plain) * 1e3:.2f} | {statistics.median(ratios):.2f} | {diff:.2g} |")
            print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="small size only, fewer repetitions")
    parser.add_argument("--reps", type=int, default=None, help="timed pairs per case (default 21 small / 7 large)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-step", action="store_true")
    parser.add_argument("--tricks", action="store_true", help="only the table of hand-written steps vs plain calls")
    parser.add_argument("--memory-child", nargs=2, metavar=("B,L", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        batch, num_labels = map(int, args.memory_child[0].split(","))
        memory_child(batch, num_labels, args.memory_child[1])
        return

    sizes = [(256, 7900)] if args.quick else [(256, 7900), (1024, 30000)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), positive rate {POSITIVE_RATE:.4f}\n")
    if args.tricks:
        print("### Hand-written steps against the plain torch call\n")
        print(tricks_table(sizes, args.reps or 21, args.reps or 7))
        return
    print("### Forward + backward time\n")
    for size in sizes:
        reps = args.reps or (7 if args.quick else (21 if size[0] * size[1] < 5e6 else 7))
        print(time_table([size], reps) if size == sizes[0] else time_table([size], reps).split("\n", 2)[2])
    if not args.skip_memory:
        print("\n### Peak memory of one forward + backward\n")
        print(memory_table(sizes, args.threads))
    if not args.skip_step:
        print("\n### Share of a training step\n")
        print(step_table(7 if args.quick else 15))
    print("\n### Hand-written steps against the plain torch call\n")
    print(tricks_table(sizes, args.reps or (7 if args.quick else 21), args.reps or 7))


if __name__ == "__main__":
    main()
