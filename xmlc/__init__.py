"""xmlc: multilabel classification with thousands of heavily imbalanced labels.

Modules, in the direction data flows::

    data -> stats -> models -> losses -> train -> metrics / calibrate -> TensorBoard, checkpoint
"""

__version__ = "0.1.0"
