"""Training: ``python -m xmlc.train``. The top of the package tree: it may import everything below
it; nothing outside ``xmlc.train`` imports from here. Its modules, in the order a run uses them:

- :mod:`.loop`: the command and the run, build -> epochs -> finish (start reading here);
- :mod:`.build`: model, loaders, AdamW and schedule, the :class:`~xmlc.train.build.Training` phase;
- :mod:`.epoch`: one pass over the training data (forward, loss, backward, step, logging);
- :mod:`.evaluator`: validation and test scoring, threshold calibration;
- :mod:`.selection`: which epoch ships, when to stop (``train.margin``, ``train.patience``);
- :mod:`.final` and :mod:`.folds`: ``train.final`` (refit, finetune, crossfit);
- :mod:`.monitor`: the run directory, checkpoints (:class:`xmlc.run.RunArtifact`), TensorBoard, figures;
- :mod:`.stops`: early ends (signals, step limit, non-finite loss) and their exit statuses;
- :mod:`.distributed`: DDP plumbing; :mod:`._malloc`: the allocator setting of the command.
"""

from xmlc.train.build import Training, new_model, start_training
from xmlc.train.epoch import train_one_epoch
from xmlc.train.evaluator import Evaluator
from xmlc.train.final import finetune, refit
from xmlc.train.loop import check_config, finish, fit, main, run
from xmlc.train.stops import Interrupted, NonFiniteLoss, RunStopped, StepLimit

__all__ = ["main", "run", "fit", "finish", "refit", "finetune", "train_one_epoch", "check_config", "RunStopped",
           "StepLimit", "Interrupted", "NonFiniteLoss", "Evaluator", "Training", "new_model", "start_training"]
