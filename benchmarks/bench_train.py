"""Examples/s of one training step: xmlc's full step vs the loop a tutorial writes.

Case ``seed`` (the original table). Model: MLP 5,000-512-7,900 (ReLU, no norm, no dropout) at batch 256 on seed-scenario-shaped
data (130 labels per example, 7,900 labels, 5,000 sparse features).

* tutorial: the whole data set as dense tensors ``X (N, 5000)``, ``Y (N, 7900)``; per step
  ``X[idx]``, ``Y[idx]``, ``nn.Linear`` layers, ``BCEWithLogitsLoss``, AdamW,
  ``running_loss += loss.item()``.
* tutorial + fused: the same loop with ``AdamW(fused=True)``, the optimizer xmlc builds.
* xmlc: :func:`xmlc.train.train_one_epoch` itself over a loader of the same number of
  batches: CSR rows sliced per batch into EmbeddingBag inputs and a dense (B, L) target
  (data loading included, in the training process), the same MLP with an EmbeddingBag
  first layer, ``xmlc.losses`` BCE, non-finite check, gradient clipping, AdamW, LR schedule.

Both run in the same process, interleaved in rounds of ``--steps`` steps; the table gives
median examples/s and the median of the per-round ratios. The loader share is the time to
iterate the same loader alone over the xmlc block time.

Cases ``zipf`` and ``goemotions``: the text recipe's full step (``configs/text.yaml``: 5-member
ensemble, hidden 1,024, input dropout 0.3, dropout 0.5, focal loss, batch 128) on sparse text
input, through ``train_one_epoch``:

* zipf: text-like batches at D = 50,000: feature ids drawn Zipf(1) (a few frequent ids, a long
  tail; about 75 distinct ids per row, about 9% of the rows touched per batch), tf-idf
  weights, rows L2-normalised, 100 labels (3 per row).
* goemotions: ``../shared/data/goemotions`` train comments as tf-idf unigrams + bigrams
  (``TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)`` fitted in this script),
  28 labels.

Each prints: xmlc now (one-pass ensemble, sparse first layer and lazy row AdamW) against
(a) xmlc before (commit 78b25be's model re-created here: 5 separate EmbeddingBag MLPs run in
turn, dense gradients, torch's fused AdamW over the whole table, float32 steps as then) and
(b) the tutorial loop a user writes for sparse text (each batch densified with
``X[idx].toarray()``, 5 ``nn.Sequential`` MLPs, ``BCEWithLogitsLoss``, ``AdamW(fused=True)``),
each pair interleaved in its own phase (to keep at most two models in memory).

Cases ``bibtex`` and ``delicious``: the same on those training sets (D = 1,836 and 500: the
first layer stays dense there, so only the one-pass ensemble differs).

Case ``scaling``: the same step for one member (hidden 1,024) at D = 50,000 and D = 500,000
(Zipf batches), now and before, interleaved: how the step grows with D. (The 5-member table
at D = 500,000 with its Adam moments needs 30 GB, more than this machine has.)

Case ``tricks``: each speed trick of the step against the plain call it replaces, interleaved:
the CPU dropout mask (``xmlc.kernels.dropout``) against ``F.dropout`` and its reference mask;
the EmbeddingBag backward (``xmlc.kernels.bag``) against ``F.embedding_bag`` under autograd;
glibc keeping big freed tensors in the heap (``xmlc._malloc``, what ``python -m xmlc.train`` sets) against its default
thresholds; bf16 autocast for the head against float32 (on CPUs with native bf16 only).

Cases ``profile-bibtex`` and ``profile-delicious``: the ops of one recipe step with the most
self time (``torch.profiler``), and a fused AdamW step over a table of the recipe's size against
a plain ``torch.add`` of that size, in GB/s: what bounds the step once the table is dense.

The script sets the allocator as ``python -m xmlc.train`` does; in the text cases "before" and
the tutorial each run in a process of their own with the default allocator, as they ran for a
user, timed block by block in turn with xmlc now (interleaved as before).
The text cases run the recipe's ``train.amp`` (bf16 steps on CPUs with native bf16).

    python benchmarks/bench_train.py [--cases seed,zipf,goemotions,scaling,bibtex,delicious,tricks --rounds 7 --steps 20 --threads 1]
    python benchmarks/bench_train.py --cases profile-bibtex,profile-delicious --threads 2 --steps 20 --rounds 5
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import gzip
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from xmlc import data as xdata, losses
from xmlc.train._malloc import reuse_large_blocks
from xmlc.config import Config, load_config
from xmlc.models import Ensemble, build_model
from xmlc.optim import build_optimizer, build_scheduler
from xmlc.train.distributed import DistEnv
from xmlc.run import Progress
from xmlc.train.epoch import train_one_epoch


class _NoStop:
    requested = False


def timed(fn, n: int = 10) -> float:
    """Seconds per call of ``fn``, the mean of ``n`` calls after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def xmlc_block(model, loss_fn, optimizer, scheduler, data, indices, cfg) -> float:
    loader = xdata.make_loader(data, cfg.data.batch_size, shuffle=False, sampler=indices)
    start = time.perf_counter()
    train_one_epoch(model, loader, loss_fn, optimizer, scheduler, progress=Progress(), tcfg=cfg.train,
                    grad_clip=cfg.optim.grad_clip, env=DistEnv(), stop=_NoStop(), writer=None)
    return time.perf_counter() - start


def loader_block(data, indices, batch_size) -> float:
    loader = xdata.make_loader(data, batch_size, shuffle=False, sampler=indices)
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def tutorial_block(model, criterion, optimizer, X, Y, indices, batch_size) -> float:
    start = time.perf_counter()
    running_loss = 0.0
    model.train()
    for i in range(0, len(indices), batch_size):
        idx = indices[i:i + batch_size]
        xb, yb = X[idx], Y[idx]
        logits = model(xb)
        loss = criterion(logits, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    return time.perf_counter() - start


def seed_case(args) -> None:
    torch.manual_seed(0)

    data = xdata.synthetic(args.rows, 5_000, 7_900, mean_labels=130.0, max_freq=0.15, seed=0)
    D, L, B = data.num_features, data.num_labels, args.batch_size
    cfg = Config()
    cfg.data.batch_size = B
    cfg.model.hidden, cfg.model.dropout, cfg.model.norm = [args.hidden], 0.0, "none"
    cfg.train.log_every = 10**9
    ours = build_model(cfg.model, D, L)
    ours_loss = losses.build_loss(cfg.loss)
    ours_opt = build_optimizer(cfg.optim, ours)
    ours_sched = build_scheduler(cfg.optim, ours_opt, total_steps=10**6)

    X = torch.from_numpy(data.features.toarray())          # the tutorial's dense tensors
    Y = torch.from_numpy(data.labels.toarray())
    tutorial = nn.Sequential(nn.Linear(D, args.hidden), nn.ReLU(), nn.Linear(args.hidden, L))
    tutorial_opt = torch.optim.AdamW(tutorial.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    criterion = nn.BCEWithLogitsLoss()
    # the same tutorial loop with the one optimizer flag xmlc sets, to show where the gain comes from
    tutorial_f = nn.Sequential(nn.Linear(D, args.hidden), nn.ReLU(), nn.Linear(args.hidden, L))
    tutorial_f_opt = torch.optim.AdamW(tutorial_f.parameters(), lr=cfg.optim.lr,
                                       weight_decay=cfg.optim.weight_decay, fused=True)

    n = args.steps * B
    gen = torch.Generator().manual_seed(0)
    rates_ours, rates_tut, rates_fused, ratios, shares = [], [], [], [], []
    for r in range(args.rounds + 1):                       # round 0 warms up
        idx = torch.randint(0, args.rows, (n,), generator=gen)
        t_ours = xmlc_block(ours, ours_loss, ours_opt, ours_sched, data, idx.tolist(), cfg)
        t_tut = tutorial_block(tutorial, criterion, tutorial_opt, X, Y, idx, B)
        t_fused = tutorial_block(tutorial_f, criterion, tutorial_f_opt, X, Y, idx, B)
        t_load = loader_block(data, idx.tolist(), B)
        if r == 0:
            continue
        rates_ours.append(n / t_ours)
        rates_tut.append(n / t_tut)
        rates_fused.append(n / t_fused)
        ratios.append(t_tut / t_ours)
        shares.append(t_load / t_ours)

    med = statistics.median
    print(f"MLP {D:,}-{args.hidden}-{L:,}, batch {B}, {args.rounds} rounds x {args.steps} steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{data.labels.nnz / args.rows:.0f} labels/example, {data.features.nnz / args.rows:.0f} features/example\n")
    print("| loop | examples/s (median) | ms/step | min-max examples/s |")
    print("|---|---:|---:|---:|")
    for name, rates in (("tutorial: dense X, Y tensors, nn.Linear, BCEWithLogitsLoss", rates_tut),
                        ("same tutorial loop with AdamW(fused=True)", rates_fused),
                        ("xmlc: train_one_epoch incl. CSR->batch loading", rates_ours)):
        print(f"| {name} | {med(rates):,.0f} | {1000 * B / med(rates):.1f} | "
              f"{min(rates):,.0f}-{max(rates):,.0f} |")
    print(f"\nxmlc / tutorial speed ratio (median of per-round ratios): {med(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"loader share of the xmlc step: {100 * med(shares):.1f}% (range {100 * min(shares):.1f}-"
          f"{100 * max(shares):.1f}%)")



# ---------------------------------------------------------------------------------------
# Sparse text input: the recipe's step


ROOT = Path(__file__).resolve().parents[1]


class OldMember(nn.Module):
    """xmlc.models.MLP as of commit 78b25be with the recipe's settings (norm none, ReLU): an
    ``nn.EmbeddingBag(D, H)`` first layer with dense gradients, dropout, ``nn.Linear`` head."""

    def __init__(self, D: int, L: int, H: int, dropout: float, input_dropout: float):
        super().__init__()
        self.bag = nn.EmbeddingBag(D, H, mode="sum")
        self.bias = nn.Parameter(torch.empty(H))
        bound = 1.0 / D ** 0.5
        nn.init.uniform_(self.bag.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        self.input_dropout = input_dropout
        self.body = nn.Sequential(nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(H, L)

    def forward(self, batch, offsets=None, weights=None):
        w = F.dropout(batch.weights, self.input_dropout, self.training)
        return self.head(self.body(self.bag(batch.indices, batch.offsets, per_sample_weights=w) + self.bias))


def old_model(mcfg, D: int, L: int) -> nn.Module:
    members = [OldMember(D, L, mcfg.hidden[0], mcfg.dropout, mcfg.input_dropout) for _ in range(mcfg.ensemble)]
    return Ensemble(members) if len(members) > 1 else members[0]


def old_optimizer(ocfg, model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": ocfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=ocfg.lr, fused=True)


class TutorialEnsemble:
    """The loop a tutorial writes for sparse text: densify the batch, M dense MLPs in turn."""

    def __init__(self, mcfg, ocfg, D: int, L: int):
        H = mcfg.hidden[0]
        self.models = [nn.Sequential(nn.Dropout(mcfg.input_dropout), nn.Linear(D, H), nn.ReLU(),
                                     nn.Dropout(mcfg.dropout), nn.Linear(H, L)) for _ in range(mcfg.ensemble)]
        self.opts = [torch.optim.AdamW(m.parameters(), lr=ocfg.lr, weight_decay=ocfg.weight_decay, fused=True)
                     for m in self.models]
        self.criterion = nn.BCEWithLogitsLoss()

    def block(self, X: sp.csr_matrix, Y: sp.csr_matrix, idx: np.ndarray, batch_size: int) -> float:
        start = time.perf_counter()
        running_loss = 0.0
        for i in range(0, len(idx), batch_size):
            rows = idx[i:i + batch_size]
            xb = torch.from_numpy(X[rows].toarray())
            yb = torch.from_numpy(Y[rows].toarray())
            for model, opt in zip(self.models, self.opts):
                model.train()
                loss = self.criterion(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                running_loss += loss.item()
        return time.perf_counter() - start


def zipf_data(n: int, D: int, L: int, *, draws: int = 92, labels_per_row: int = 3, seed: int = 0) -> "xdata.XMCData":
    """Text-like rows: ``draws`` feature ids per row from Zipf(1) over D (ids shuffled), tf-idf
    values (log1p(count) * idf), rows L2-normalised; ``labels_per_row`` uniform labels of L."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, D + 1)
    p /= p.sum()
    cols = rng.permutation(D)[rng.choice(D, size=n * draws, p=p)]
    X = sp.csr_matrix((np.ones(n * draws, np.float32), (np.repeat(np.arange(n), draws), cols)), shape=(n, D))
    X.sum_duplicates()
    df = np.bincount(X.indices, minlength=D)
    X.data = (np.log1p(X.data) * (np.log((1 + n) / (1 + df[X.indices])) + 1)).astype(np.float32)
    X = xdata.normalize_rows(X)
    lab = np.stack([rng.choice(L, labels_per_row, replace=False) for _ in range(n)])
    Y = sp.csr_matrix((np.ones(lab.size, np.float32), (np.repeat(np.arange(n), labels_per_row), lab.ravel())),
                      shape=(n, L))
    return xdata.XMCData(X.astype(np.float32), Y, D, L)


def goemotions_data(path: Path) -> "xdata.XMCData":
    from sklearn.feature_extraction.text import TfidfVectorizer
    rows = [line.rstrip("\n").split("\t") for line in gzip.open(path / "train.tsv.gz", "rt", encoding="utf-8")]
    X = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, dtype=np.float32).fit_transform(
        [r[0] for r in rows])
    labels = [[int(x) for x in r[1].split(",")] for r in rows]
    L = 1 + max(max(ls) for ls in labels)
    Y = sp.csr_matrix((np.ones(sum(map(len, labels)), np.float32),
                       (np.repeat(np.arange(len(rows)), [len(ls) for ls in labels]), np.concatenate(labels))),
                      shape=(len(rows), L))
    X.sort_indices()
    return xdata.XMCData(X.tocsr(), Y, X.shape[1], L)


def recipe_config(ensemble: int | None = None) -> Config:
    cfg = load_config(ROOT / "configs" / "text.yaml")
    cfg.train.log_every = 10**9
    if ensemble is not None:
        cfg.model.ensemble = ensemble
    return cfg


class Contender:
    """A model trained through ``train_one_epoch`` (xmlc now, or xmlc before)."""

    def __init__(self, cfg: Config, data, *, before: bool):
        D, L = data.num_features, data.num_labels
        torch.manual_seed(0)
        if before:   # at 78b25be train.amp meant CUDA only: CPU steps ran in float32
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp=False))
        self.cfg, self.data = cfg, data
        self.model = old_model(cfg.model, D, L) if before else build_model(cfg.model, D, L)
        self.opt = old_optimizer(cfg.optim, self.model) if before else build_optimizer(cfg.optim, self.model)
        self.sched = build_scheduler(cfg.optim, self.opt, total_steps=10**6)
        self.loss = losses.build_loss(cfg.loss)

    def block(self, idx: np.ndarray) -> float:
        return xmlc_block(self.model, self.loss, self.opt, self.sched, self.data, idx.tolist(), self.cfg)


def interleave(blocks: dict, rounds: int, n: int, num_rows: int) -> dict:
    """Time each block on the same random rows per round (round 0 warms up); {name: [seconds]}."""
    rng = np.random.default_rng(1)
    times = {name: [] for name in blocks}
    for r in range(rounds + 1):
        idx = rng.integers(0, num_rows, n)
        for name, block in blocks.items():
            t = block(idx)
            if r:
                times[name].append(t)
    return times


def touched_fraction(data, batch_size: int, samples: int = 20) -> float:
    rng = np.random.default_rng(2)
    return float(np.mean([len(np.unique(data.features[rng.integers(0, len(data), batch_size)].indices))
                          for _ in range(samples)]) / data.num_features)


def _rival(kind: str, cfg: Config, data):
    """The "before" contender or the tutorial loop, for :class:`Rival`'s own process."""
    if kind == "before":
        return Contender(cfg, data, before=True).block
    tutorial = TutorialEnsemble(cfg.model, cfg.optim, data.num_features, data.num_labels)
    return lambda idx: tutorial.block(data.features, data.labels, idx, cfg.data.batch_size)


def _rival_worker(conn, kind: str, cfg: Config, data, threads: int) -> None:
    torch.set_num_threads(threads)   # glibc's default allocator here, as the rival ran (no reuse_large_blocks)
    block = _rival(kind, cfg, data)
    while (idx := conn.recv()) is not None:
        conn.send(block(idx))


class Rival:
    """A rival loop in a process of its own, timed block by block on request: it runs with the
    C library's default allocator (as 78b25be and a tutorial loop ran), while xmlc now runs in
    this process with the allocator ``python -m xmlc.train`` sets."""

    def __init__(self, kind: str, cfg: Config, data, threads: int):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_rival_worker, args=(child, kind, cfg, data, threads), daemon=True)
        self.proc.start()

    def block(self, idx: np.ndarray) -> float:
        self.conn.send(idx)
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join()


def text_case(name: str, data, args) -> None:
    cfg = recipe_config()
    B, n = cfg.data.batch_size, args.steps * cfg.data.batch_size
    med = statistics.median
    now = Contender(cfg, data, before=False)
    rows = []
    for rival in ("before", "tutorial"):
        other = Rival(rival, cfg, data, torch.get_num_threads())
        times = interleave({"now": now.block, rival: other.block}, args.rounds, n, len(data))
        other.close()
        ratios = [o / m for o, m in zip(times[rival], times["now"])]
        rows.append((rival, [n / t for t in times[rival]], [n / t for t in times["now"]], ratios))
        gc.collect()
    state_mb = sum(t.numel() * t.element_size() for s in now.opt.state.values() for t in s.values()
                   if torch.is_tensor(t)) / 2**20
    print(f"\n### {name}: D = {data.num_features:,}, L = {data.num_labels}, "
          f"{data.features.nnz / len(data):.0f} non-zeros/row, {100 * touched_fraction(data, B):.1f}% of the rows "
          f"touched per batch of {B}; {cfg.model.ensemble} members x hidden {cfg.model.hidden[0]}; "
          f"{args.rounds} rounds x {args.steps} steps, {torch.get_num_threads()} threads\n")
    print("| loop | examples/s (median) | ms/step | xmlc now / it (median of per-round ratios, range) |")
    print("|---|---:|---:|---:|")
    labels = {"before": "xmlc before (5 separate EmbeddingBag MLPs, dense grads, fused AdamW)",
              "tutorial": "tutorial (X[idx].toarray(), 5 nn.Sequential MLPs, AdamW fused)"}
    for rival, theirs, ours, ratios in rows:
        print(f"| {labels[rival]} | {med(theirs):,.0f} | {1000 * B / med(theirs):.0f} | "
              f"**{med(ratios):.2f}x** ({min(ratios):.2f}-{max(ratios):.2f}) |")
        print(f"| xmlc now, same rounds | {med(ours):,.0f} | {1000 * B / med(ours):.0f} | |")
    print(f"\nxmlc now: optimizer state {state_mb:,.0f} MiB (Adam moments of the (D, 5 x 1024) table "
          f"included: {2 * data.num_features * 5 * 1024 * 4 / 2**20:,.0f} MiB)")


def scaling_case(args) -> None:
    cfg = recipe_config(ensemble=1)
    B, n = cfg.data.batch_size, args.steps * cfg.data.batch_size
    med = statistics.median
    print(f"\n### scaling with D: one member (hidden {cfg.model.hidden[0]}), Zipf batches; "
          f"{args.rounds} rounds x {args.steps} steps, {torch.get_num_threads()} threads\n")
    print("| model | examples/s at D = 50,000 | at D = 500,000 | step time 500k / 50k (median, range) |")
    print("|---|---:|---:|---:|")
    for before in (False, True):
        small, large = zipf_data(4096, 50_000, 100), zipf_data(4096, 500_000, 100)
        a, b = Contender(cfg, small, before=before), Contender(cfg, large, before=before)
        times = interleave({"50k": a.block, "500k": b.block}, args.rounds, n, 4096)
        ratios = [t5 / t1 for t1, t5 in zip(times["50k"], times["500k"])]
        name = "xmlc before (dense grads, fused AdamW)" if before else "xmlc now (sparse rows)"
        print(f"| {name} | {med([n / t for t in times['50k']]):,.0f} | {med([n / t for t in times['500k']]):,.0f} | "
              f"**{med(ratios):.2f}x** ({min(ratios):.2f}-{max(ratios):.2f}) |")
        del a, b
        gc.collect()


def _bag_block(backend):
    """Forward + backward of a recipe's first layer at bibtex's size: a (1,836, 5 x 1,024) table,
    5 members with their own input-dropout values, 128 rows of 70 ids, dense gradient."""
    g = torch.Generator().manual_seed(0)
    D, M, H, B, per_row = 1_836, 5, 1024, 128, 70
    weight = torch.randn(D, M * H, generator=g).requires_grad_(True)
    indices = torch.randint(0, D, (B * per_row,), generator=g)
    offsets = torch.arange(0, B * per_row, per_row)
    values = torch.rand(M, B * per_row, generator=g)
    grad = torch.randn(M, B, H, generator=g)

    def block():
        weight.grad = None
        backend(weight, indices, offsets, values).backward(grad)
    return block


def _per_member_bag(weight, indices, offsets, values):
    """What a user writes for M members: one ``F.embedding_bag`` per member's columns, autograd's backward."""
    M = values.shape[0]
    H = weight.shape[1] // M
    return torch.stack([F.embedding_bag(indices, weight[:, m * H:(m + 1) * H], offsets, mode="sum",
                                        per_sample_weights=values[m]) for m in range(M)])


def _trick_cases(x, grad):
    """(what, plain name, plain, xmlc name, xmlc): each callable returns its seconds."""
    from xmlc.kernels.bag import sparse_bag, sparse_bag_reference
    from xmlc.kernels.dropout import dropout
    from xmlc.train.epoch import native_bf16

    def alloc(reuse: bool):
        """5 x allocate + fill bibtex's dense (D, M x H) table gradient, in a fresh process (once a
        process's heap has grown, lowering the thresholds again does not bring mmap back)."""
        code = ("import time, torch; from xmlc.train import _malloc\n"
                f"torch.set_num_threads(1); {'_malloc.reuse_large_blocks()' if reuse else 'pass'}\n"
                "torch.empty(1_836, 5 * 1024).fill_(1.0)\n"
                "start = time.perf_counter()\n"
                "for _ in range(5): torch.empty(1_836, 5 * 1024).fill_(1.0)\n"
                "print(time.perf_counter() - start)")

        def block():
            env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            return float(out.stdout)
        return block

    def head(L, bf16):
        h, w = torch.randn(5, 128, 1024, requires_grad=True), torch.randn(5, 1024, L, requires_grad=True)
        b, g = torch.randn(5, 1, L, requires_grad=True), torch.randn(5, 128, L)

        def block():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = torch.baddbmm(b, h, w)
            out.float().backward(g)
        return block

    def in_process(fn):
        return lambda: timed(fn)

    ours = "xmlc.kernels.dropout.dropout (16-bit mask)"
    cases = [("dropout p=0.5 on (5, 128, 1,024), forward + backward", "F.dropout (bernoulli_ mask)",
              in_process(lambda: F.dropout(x, 0.5, True).backward(grad)), ours,
              in_process(lambda: dropout(x, 0.5).backward(grad))),
             ("the same", "reference mask torch.rand >= p (keep_mask_reference)",
              in_process(lambda: (x * (torch.rand(x.shape) >= 0.5).float().mul_(2.0)).backward(grad)),
              ours, in_process(lambda: dropout(x, 0.5).backward(grad))),
             ("EmbeddingBag (1,836, 5 x 1,024), 5 members, 128 rows x 70 ids, forward + backward (dense grad)",
              "F.embedding_bag under autograd (sparse_bag_reference)", in_process(_bag_block(sparse_bag_reference)),
              "xmlc.kernels.bag.sparse_bag", in_process(_bag_block(sparse_bag))),
             ("the same", "F.embedding_bag per member, autograd", in_process(_bag_block(_per_member_bag)),
              "xmlc.kernels.bag.sparse_bag", in_process(_bag_block(sparse_bag))),
             ("5 x allocate + fill the (1,836, 5,120) float32 gradient (fresh processes)",
              "glibc defaults (mmap per tensor)", alloc(False), "xmlc._malloc.reuse_large_blocks", alloc(True))]
    if native_bf16(torch.device("cpu")):
        for L, name in ((159, "bibtex"), (983, "delicious")):
            cases.append((f"head (5, 128, 1,024) x (5, 1,024, {L}) ({name}), forward + backward", "float32",
                          in_process(head(L, False)), "bf16 autocast", in_process(head(L, True))))
    return cases


def tricks_case(args) -> None:
    """Each speed trick of the text recipe's step against the plain call, interleaved, median ratios."""
    from xmlc.train.epoch import native_bf16

    x = torch.randn(5, 128, 1024, requires_grad=True)
    grad = torch.randn(5, 128, 1024)
    cases = _trick_cases(x, grad)
    print(f"\n### tricks: each against the plain call, {args.rounds} interleaved rounds, "
          f"{torch.get_num_threads()} threads\n")
    print("| what | plain | ms | xmlc | ms | plain / xmlc (median, range) |")
    print("|---|---|---:|---|---:|---:|")
    for what, plain_name, plain, ours_name, ours in cases:   # each callable returns its seconds
        pairs = [(plain(), ours()) for _ in range(args.rounds)]
        ratios = [a / b for a, b in pairs]
        print(f"| {what} | {plain_name} | {1000 * statistics.median(a for a, _ in pairs):.2f} | {ours_name} | "
              f"{1000 * statistics.median(b for _, b in pairs):.2f} | **{statistics.median(ratios):.2f}x** "
              f"({min(ratios):.2f}-{max(ratios):.2f}) |")
    if not native_bf16(torch.device("cpu")):
        print("\nThis CPU has no native bf16 (AVX512-BF16 / AMX): train.amp keeps CPU training in float32.")


def profile_case(name: str, data, args) -> None:
    """Where one recipe step's time goes (``torch.profiler``, the ops with the most self time over
    ``args.steps`` steps), and the memory bandwidth that bounds it: one fused AdamW step over a
    table of the recipe's size against a plain ``torch.add`` of the same size (GB/s moved)."""
    from torch.profiler import ProfilerActivity, profile

    cfg = recipe_config()
    now, B = Contender(cfg, data, before=False), cfg.data.batch_size
    idx = np.random.default_rng(0).permutation(len(data))[: B * args.steps]
    now.block(idx[: B * 3])   # warm up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        seconds = now.block(idx)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    print(f"\n### profile of the recipe step, {name}: {1000 * seconds / args.steps:.1f} ms a step under the profiler, "
          f"{torch.get_num_threads()} threads, {args.steps} steps\n")
    print("| op | self ms per step | calls per step |\n|---|---:|---:|")
    for e in events:
        print(f"| {e.key[:60]} | {e.self_cpu_time_total / 1000 / args.steps:.2f} | {e.count / args.steps:g} |")
    table = now.model.input.weight
    param = torch.nn.Parameter(torch.randn(table.shape))
    param.grad = torch.randn_like(param)
    adamw = torch.optim.AdamW([param], lr=1e-3, fused=True)
    a, b, c = torch.randn(table.shape), torch.randn(table.shape), torch.empty(table.shape)
    mb = param.numel() * 4 / 1e6

    rounds = [(timed(adamw.step, 20), timed(lambda: torch.add(a, b, out=c), 20)) for _ in range(args.rounds)]
    adam_s, add_s = (statistics.median(r[i] for r in rounds) for i in (0, 1))
    print(f"\nTable {tuple(table.shape)} float32 ({mb:.1f} MB): fused AdamW step {1000 * adam_s:.2f} ms "
          f"(reads parameter, gradient, 2 moments, writes 3: {7 * mb / 1000 / adam_s:.0f} GB/s); torch.add "
          f"{1000 * add_s:.2f} ms ({3 * mb / 1000 / add_s:.0f} GB/s); medians of {args.rounds} interleaved rounds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="seed,zipf,goemotions,scaling")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--rows", type=int, default=8192, help="examples generated (seed-scenario shape)")
    parser.add_argument("--batch-size", type=int, default=256, help="seed case only (the text cases use the recipe's 128)")
    parser.add_argument("--hidden", type=int, default=512, help="seed case only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared box)")
    data_dir = ROOT.parent / "shared" / "data"
    parser.add_argument("--goemotions", type=Path, default=(data_dir if data_dir.is_dir() else Path("/work/shared/data"))
                        / "goemotions")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reuse_large_blocks()   # as python -m xmlc.train does
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for case in args.cases.split(","):
        if case == "seed":
            seed_case(args)
        elif case == "zipf":
            text_case("zipf", zipf_data(4096, 50_000, 100), args)
        elif case == "goemotions":
            text_case("goemotions tf-idf (unigrams + bigrams)", goemotions_data(args.goemotions), args)
        elif case == "scaling":
            scaling_case(args)
        elif case == "tricks":
            tricks_case(args)
        elif case in ("bibtex", "delicious", "profile-bibtex", "profile-delicious"):
            name = case.removeprefix("profile-")
            d = xdata.read_xmc(args.goemotions.parent / f"{name}_train.txt.gz")
            d = xdata.XMCData(xdata.normalize_rows(d.features), d.labels, d.num_features, d.num_labels)
            (profile_case if case.startswith("profile-") else text_case)(name, d, args)
        else:
            raise SystemExit(f"unknown case {case!r}; valid: seed, zipf, goemotions, scaling, bibtex, delicious, "
                             f"tricks, profile-bibtex, profile-delicious")


if __name__ == "__main__":
    main()
