"""xmlc: multilabel classification with thousands of heavily imbalanced labels.

Modules, in the direction data flows::

    data -> stats -> models -> losses -> train -> metrics / calibrate -> TensorBoard, checkpoint
"""

__version__ = "0.1.0"


def load(run, **kwargs):
    """A trained run as a :class:`xmlc.api.Classifier`: ``xmlc.load("runs/x").predict(texts)``
    returns label names (see :func:`xmlc.api.load`)."""
    from xmlc.api import load as _load   # lazily: `import xmlc` stays light

    return _load(run, **kwargs)
