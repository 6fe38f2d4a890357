"""Training: ``python -m xmlc.train``. The loop (:mod:`.loop`: build -> epochs -> finish), epoch
selection and early stopping, the run directory and TensorBoard (:mod:`.monitor`), and DDP
plumbing (:mod:`.distributed`). The top of the package: it may import everything below it;
nothing outside ``xmlc.train`` imports from here.
"""

from xmlc.train.loop import (Evaluator, Interrupted, LabelStats, NonFiniteLoss, RunStopped, StepLimit, check_config,
                             finish, fit, main, refit, run, train_one_epoch)

__all__ = ["main", "run", "fit", "finish", "refit", "train_one_epoch", "check_config", "RunStopped", "StepLimit",
           "Interrupted", "NonFiniteLoss", "LabelStats", "Evaluator"]
