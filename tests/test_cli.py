"""xmlc.cli: exit statuses and the table that maps user errors to them; xmlc.train.main's use of it."""

import signal

import pytest

from xmlc.train import loop as xtrain, stops
from xmlc.cli import INPUT_ERRORS, ExitStatus, exit_status, report_error
from xmlc.config import ConfigError
from xmlc.data import DataFileError


def test_statuses_are_the_documented_numbers():
    assert (ExitStatus.OK, ExitStatus.FAILED, ExitStatus.USAGE) == (0, 1, 2)
    assert ExitStatus.for_signal(signal.SIGINT) == 130 and ExitStatus.for_signal(signal.SIGTERM) == 143


@pytest.mark.parametrize("exc, status", [
    (ConfigError("config key 'x' ..."), ExitStatus.USAGE),
    (DataFileError("data.train: file not found: a.txt"), ExitStatus.USAGE),
    (FileNotFoundError("checkpoint not found: b.pt"), ExitStatus.USAGE),
    (ValueError("a bug, not a user error"), None),
    (KeyError("bug"), None),
])
def test_exit_status_table(exc, status):
    assert exit_status(exc) == status


def test_input_errors_add_value_error_for_evaluate_and_predict():
    assert exit_status(ValueError("--top-k must be >= 0"), INPUT_ERRORS) == ExitStatus.USAGE
    assert exit_status(KeyError("bug"), INPUT_ERRORS) is None


def test_report_error_prints_one_line_or_reraises(capsys):
    assert report_error(DataFileError("data.val: cannot read v.txt: line 3")) == ExitStatus.USAGE
    assert capsys.readouterr().err == "error: data.val: cannot read v.txt: line 3\n"
    with pytest.raises(KeyError):
        report_error(KeyError("bug"))


def test_run_stopped_statuses():
    assert stops.StepLimit().status == ExitStatus.OK
    assert stops.NonFiniteLoss().status == ExitStatus.FAILED
    assert stops.Interrupted(signal.SIGINT).status == 130
    assert stops.Interrupted(None).status == 143   # another process got the signal


@pytest.mark.parametrize("raised, expected", [
    (stops.Interrupted(signal.SIGTERM), 143),
    (stops.NonFiniteLoss("at step 3"), ExitStatus.FAILED),
    (stops.StepLimit(), ExitStatus.OK),
    (DataFileError("data.train: file not found: t.txt"), ExitStatus.USAGE),
])
def test_main_maps_what_run_raises_to_the_exit_status(monkeypatch, raised, expected):
    def run(cfg, *, resume=None):
        raise raised

    monkeypatch.setattr(xtrain, "run", run)
    assert xtrain.main([]) == expected


def test_main_lets_a_bug_keep_its_traceback(monkeypatch):
    def run(cfg, *, resume=None):
        raise ZeroDivisionError("a bug in xmlc")

    monkeypatch.setattr(xtrain, "run", run)
    with pytest.raises(ZeroDivisionError):
        xtrain.main([])


def test_docstring_example():
    import doctest

    from xmlc import cli

    result = doctest.testmod(cli)
    assert result.attempted > 0 and result.failed == 0
