"""The ``auto`` values of a config, resolved once the training data's shape is known.

``model.name: auto`` picks the model family from the size of the input table (D features, M
members), so one recipe (``configs/text.yaml``) fits a few hundred features and a million:

* **mlp** (a deep ensemble: M members, each its own [D x 1,024] input table and head) when the M
  tables together hold at most :data:`OWN_TABLES_MAX_WEIGHTS` weights (D <= 3,276 at M = 5). With
  few features each member can afford its own table; members that share nothing can each leave
  out a share of the validation rows (``train.final: crossfit``), so the ensemble trains on
  them too.
* **wide_deep** otherwise: a linear part beside one embedding table that the M heads share, about
  3 D L weights in all (:func:`xmlc.models.auto_hidden`). Shared weights see every row, so the
  validation rows stay held out (``train.final: none``).

The other ``auto`` keys take the resolved family's value (:data:`PROFILES`): ``model.hidden``
(under ``model.name: auto`` only: [1,024] for the mlp; else :func:`xmlc.models.auto_hidden`),
``model.input_dropout``, ``model.output_bias``, ``loss.gamma`` (the focal loss's focusing),
``train.final`` and ``train.epochs`` (about a fixed number of optimizer steps, clipped to a range
of passes). A value that is not ``auto``
is kept as given, so an override always wins.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from xmlc.config import Config

__all__ = ["Profile", "PROFILES", "OWN_TABLES_MAX_WEIGHTS", "DEEP_HIDDEN", "AUTO_KEYS", "model_family",
           "auto_epochs", "resolve_auto", "resolve_final"]

#: ``model.name: auto`` -> ``mlp`` when the members' own input tables, M x D x :data:`DEEP_HIDDEN`,
#: hold at most this many weights (64 MiB of float32); else ``wide_deep``.
OWN_TABLES_MAX_WEIGHTS = 2**24
#: The hidden width of the mlp family under ``model.name: auto``.
DEEP_HIDDEN = 1024


#: (section, key) of every key that may be ``auto`` and is resolved here.
AUTO_KEYS = (("model", "name"), ("model", "hidden"), ("model", "input_dropout"), ("model", "output_bias"),
             ("loss", "gamma"), ("train", "final"), ("train", "epochs"))


class Profile(NamedTuple):
    """What the ``auto`` keys become for one model family."""

    input_dropout: float
    output_bias: str
    gamma: float          # loss.gamma: auto (the focal loss's focusing; other losses ignore it)
    final: str            # crossfit falls back to none for a single model (it needs members)
    steps: int            # train.epochs: auto: about this many optimizer steps ...
    epochs: tuple         # ... in at least and at most this many passes


#: Per family. The mlp values are the deep-ensemble recipe measured on bibtex and delicious
#: (benchmarks/RESULTS.md); the wide_deep values are the text recipe's (configs/text.yaml). Focal
#: gamma: 0.5 for wide & deep (against 1.0, seeds 0-2 on GoEmotions, rcv1sub2 and yahoo_arts: mean
#: test P@1 +0.1 to +0.3 and macro AUPRC +0.0003 to +0.007 on each), 1.0 for the mlp (0.5 lost
#: 0.2-0.4 P@1 on bibtex and 0.003 macro AUPRC on delicious).
PROFILES: dict[str, Profile] = {
    "mlp": Profile(input_dropout=0.3, output_bias="zero", gamma=1.0, final="crossfit", steps=3000, epochs=(3, 30)),
    "wide_deep": Profile(input_dropout=0.1, output_bias="prior", gamma=0.5, final="none", steps=1000, epochs=(3, 10)),
    "linear": Profile(input_dropout=0.0, output_bias="prior", gamma=1.0, final="none", steps=1000, epochs=(3, 10)),
}


def model_family(num_features: int, members: int) -> str:
    """``model.name: auto``: ``mlp`` when ``members`` own tables of ``num_features`` x
    :data:`DEEP_HIDDEN` fit in :data:`OWN_TABLES_MAX_WEIGHTS`, else ``wide_deep``.

    >>> model_family(1_836, 5), model_family(47_236, 5)
    ('mlp', 'wide_deep')
    """
    return "mlp" if members * num_features * DEEP_HIDDEN <= OWN_TABLES_MAX_WEIGHTS else "wide_deep"


def auto_epochs(num_rows: int, batch_size: int, steps: int = 1000, epochs: tuple = (3, 10)) -> int:
    """``train.epochs: auto``: ``round(steps * batch_size / num_rows)`` passes, clipped to
    ``epochs``: about a fixed number of steps, so a large data set takes few passes and a small one
    several.

    >>> auto_epochs(43_410, 128), auto_epochs(4_050, 128), auto_epochs(4_782, 128, 3000, (3, 30))
    (3, 10, 30)
    """
    low, high = epochs
    return int(min(high, max(low, round(steps * batch_size / max(num_rows, 1)))))


def resolve_auto(cfg: Config, *, num_features: int, num_rows: int) -> Config:
    """``cfg`` with its ``auto`` values resolved for ``num_features`` input features and
    ``num_rows`` training rows (a copy; ``train.epochs: auto`` counts the rows trained on, which
    are more under ``train.final: crossfit``: resolve ``final`` first with
    :func:`resolve_final`, then call this with the rows it trains on)."""
    m, t = cfg.model, cfg.train
    name = _name(cfg, num_features)
    hidden = [DEEP_HIDDEN] if m.name == "auto" and name == "mlp" and m.hidden == "auto" else m.hidden
    profile = _profile(name)
    model = dataclasses.replace(
        m, name=name, hidden=hidden,
        input_dropout=profile.input_dropout if m.input_dropout == "auto" else m.input_dropout,
        output_bias=profile.output_bias if m.output_bias == "auto" else m.output_bias)
    epochs = auto_epochs(num_rows, cfg.data.batch_size, profile.steps, profile.epochs) if t.epochs == "auto" else t.epochs
    loss = dataclasses.replace(cfg.loss, gamma=profile.gamma) if cfg.loss.gamma == "auto" else cfg.loss
    return dataclasses.replace(cfg, model=model, loss=loss,
                               train=dataclasses.replace(t, final=resolve_final(cfg, num_features), epochs=epochs))


def resolve_final(cfg: Config, num_features: int) -> str:
    """``train.final`` for ``num_features`` features: ``auto`` -> the family's (crossfit only for
    an ensemble, else none); any other value as given."""
    if cfg.train.final != "auto":
        return cfg.train.final
    final = _profile(_name(cfg, num_features)).final
    return "none" if final == "crossfit" and cfg.model.ensemble < 2 else final


def _name(cfg: Config, num_features: int) -> str:
    """``model.name``, with ``auto`` resolved by :func:`model_family`."""
    return model_family(num_features, cfg.model.ensemble) if cfg.model.name == "auto" else cfg.model.name


def _profile(name: str) -> Profile:
    """The family's :class:`Profile`; a model of the user's registry takes the linear one's."""
    return PROFILES.get(name, PROFILES["linear"])
