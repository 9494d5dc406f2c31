"""Training: one U-Net for one (loss, seed[, fold]), knowing nothing of MLflow.

Middle floor: takes the typed settings (:class:`segloss.config.Config`) and knows nothing of
Hydra. The prepared train and
validation splits are loaded into memory once as uint8 tensors (a few MB at 64x64) and
batched on the fly; :func:`segloss.models.preprocess` turns them into model input. A caller
that records runs passes a :data:`Tracker` (``segloss.sweep.tracked`` does, for MLflow).

Outputs, written atomically: ``<paths.models>/<loss>/seed<k>/model.pt`` (the checkpoint of the
best validation Dice, :func:`segloss.models.save_checkpoint`) and ``history.csv``.

Modules: :mod:`.settings` (checks, precision, pre-flight), :mod:`.augment`, :mod:`.epoch`
(data in memory, one training pass, validation), :mod:`.divergence`, :mod:`.loop` (the
epoch loop), :mod:`.job` (one job from config to ``model.pt``).
"""

from segloss.fingerprint import (
    NOT_FINGERPRINTED,
    STAMP,
    TrainSummary,
    code_modules,
    code_version,
    fingerprint,
    fingerprint_hash,
    output_dir,
    write_stamp,
)
from segloss.training.augment import augment_batch
from segloss.training.divergence import NonFiniteLoss
from segloss.training.job import (
    HISTORY_COLUMNS,
    Job,
    Recorder,
    Tracker,
    Trained,
    remove_outputs,
    train,
    untracked,
)
from segloss.training.loop import seed_everything
from segloss.training.settings import (
    PRECISIONS,
    autocast,
    preflight,
)

__all__ = [
    "HISTORY_COLUMNS",
    "NOT_FINGERPRINTED",
    "PRECISIONS",
    "STAMP",
    "Job",
    "NonFiniteLoss",
    "Recorder",
    "Tracker",
    "TrainSummary",
    "Trained",
    "augment_batch",
    "autocast",
    "code_modules",
    "code_version",
    "fingerprint",
    "fingerprint_hash",
    "output_dir",
    "preflight",
    "remove_outputs",
    "seed_everything",
    "train",
    "untracked",
    "write_stamp",
]
