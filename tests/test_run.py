"""xmlc.run.RunArtifact: the run file round trip, the model rebuilt from it alone, what best.pt
leaves out, and a clear error for a file that lacks a field."""

import numpy as np
import pytest
import torch

from xmlc.checkpoint import load_checkpoint, rng_state, save_checkpoint
from xmlc.config import Config
from xmlc.errors import CheckpointError
from xmlc.models import build_model
from xmlc.run import LabelStats, Progress, RunArtifact, TrainingState


def _run(training: bool = True) -> tuple[RunArtifact, torch.nn.Module]:
    cfg = Config()
    cfg.model.hidden = [8]
    model = build_model(cfg.model, 30, 4)
    stats = LabelStats(np.array([3, 1, 0, 7]), 10, torch.tensor([2.3, 9.0, 10.0, 0.43]))
    state = TrainingState({"state": {}, "param_groups": []}, {"last_epoch": 3}, rng_state()) if training else None
    progress = Progress(step=12, epoch=2, best_value=0.5, best_epoch=2, history=[{"epoch": 1, "m": 0.4}])
    return RunArtifact(cfg, model.state_dict(), 30, 4, stats, progress, label_names=["a", "b", "c", "d"],
                       thresholds=torch.full((4,), 0.3), training=state), model


def test_save_load_round_trip_and_rebuild(tmp_path):
    run, model = _run()
    path = run.save(tmp_path / "run" / "last.pt")
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]      # no temp file left behind
    back = RunArtifact.load(tmp_path / "run")                          # a run directory means last.pt
    assert back.config == run.config and back.label_names == run.label_names
    assert (back.num_features, back.num_labels, back.progress) == (30, 4, run.progress)
    assert np.array_equal(back.label_stats.counts, [3, 1, 0, 7]) and back.label_stats.num_examples == 10
    assert torch.equal(back.label_stats.pos_weight, run.label_stats.pos_weight)
    assert torch.equal(back.thresholds, run.thresholds) and back.training.scheduler == {"last_epoch": 3}
    assert back.best == {"metric": "auprc_macro", "value": 0.5, "epoch": 2, "selected_epoch": 2}
    rebuilt = back.build_model()
    assert not rebuilt.training
    x = (torch.tensor([1, 5, 7]), torch.tensor([0, 2]), torch.ones(3))
    model.eval()
    torch.testing.assert_close(rebuilt(*x), model(*x))


def test_a_mapped_load_predicts_the_same_and_the_model_holds_the_file_tensors_without_a_copy(tmp_path):
    """``mmap=True`` (predict, evaluate): the weights map the file, and the built model's
    parameters are those very tensors (one-string predict on a 650 MB best.pt reads a few rows,
    not the file); scores equal the read-in load's."""
    run, model = _run(training=False)
    path = run.save(tmp_path / "best.pt")
    read_in, mapped = RunArtifact.load(path), RunArtifact.load(path, mmap=True)
    rebuilt = mapped.build_model()
    for name, tensor in rebuilt.state_dict().items():
        assert tensor.data_ptr() == mapped.weights[name].data_ptr(), name
    x = (torch.tensor([1, 5, 7]), torch.tensor([0, 2]), torch.ones(3))
    assert torch.equal(rebuilt(*x), read_in.build_model()(*x))
    model.eval()
    torch.testing.assert_close(rebuilt(*x), model(*x))


def test_the_file_is_plain_data_in_the_documented_layout(tmp_path):
    run, _ = _run()
    raw = load_checkpoint(run.save(tmp_path / "last.pt"))   # torch.load(weights_only=True)
    assert {"format", "model", "optimizer", "scheduler", "rng", "progress", "step", "epoch", "config",
            "num_features", "num_labels", "label_stats", "label_names", "featurizer", "thresholds", "best"} == set(raw)
    assert raw["step"] == 12 and raw["progress"]["history"] == [{"epoch": 1, "m": 0.4}]


def test_shipped_leaves_out_the_training_state(tmp_path):
    run, _ = _run()
    raw = load_checkpoint(run.shipped().save(tmp_path / "best.pt"))
    assert not {"optimizer", "scheduler", "rng"} & set(raw)
    assert RunArtifact.load(tmp_path / "best.pt").training is None and run.training is not None


def test_label_stats_derive_buckets_propensities_and_the_prior():
    stats = LabelStats(np.array([5, 0]), 10, torch.tensor([1.0, 3.0]))
    assert stats.buckets.shape == (2,) and stats.propensities.shape == (2,)
    # w p / (w p + 1 - p): p = 0.5, w = 1 -> 0.5; p = 0 -> 0
    torch.testing.assert_close(stats.output_prior(), torch.tensor([0.5, 0.0]))


@pytest.mark.parametrize("field, value, message", [
    ("num_labels", None, "field 'num_labels' is missing"),
    ("label_stats", [1, 2], "field 'label_stats' is a list"),
    ("config", {"model": {"hidden": "wide"}}, "its config does not load"),
])
def test_an_incomplete_file_is_refused_naming_the_field(tmp_path, field, value, message):
    run, _ = _run(training=False)
    raw = run.to_dict()
    if value is None:
        del raw[field]
    else:
        raw[field] = value
    path = save_checkpoint(raw, tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match=message) as info:
        RunArtifact.load(path)
    assert str(path) in str(info.value)
