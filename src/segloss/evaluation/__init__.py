"""Evaluate every trained model on the prepared test split; write the tables the report reads.

Middle floor: knows of config mappings and the paths it is given, not of Hydra, DVC or
MLflow. For each ``models/<loss>/seed<k>/model.pt`` (``.../fold<f>/model.pt`` with
cross-validation: each model predicts its own fold's test patients, so the tables pool the
out-of-fold predictions of all patients) it predicts the test split, upsamples the
probabilities to the source resolution (:mod:`segloss.scoring`), binarises at the configured
threshold and scores every slice against the original masks with
:func:`segloss.metrics.per_image`. It also predicts the validation split to find the
threshold that is best there (reported next to the fixed one, never used for the verdict) and
bins the test probabilities for calibration (:mod:`segloss.calibration`).

One concept per module: ``settings`` (the ``eval`` group), ``checkpoints`` (find, load, match
to the data), ``inference`` (probabilities at the source size), ``tables`` (one model's
tables), ``summary`` (summary metrics, out of fold, ``summary.json``), ``outputs`` (the files),
``stage`` (:func:`score_models`, :func:`write_outputs`, :func:`evaluate`).

Outputs (docs/architecture.md, "Evaluation outputs"), each written atomically:

* ``predictions/<loss>_seed<k>[_fold<f>].npz``: the native masks (``masks`` bool (N,H0,W0), or
  ``bits`` and ``sizes`` where the images differ in size: :func:`segloss.stacks.from_npz`),
  ``patient``, ``slice``
* ``<metrics>/per_image.csv``: ``loss,seed,fold,patient,slice`` + every ``per_image`` column
  (counts at native resolution; ``hd95_<unit>``, ``nsd_<tol><unit>`` per slice)
* ``<metrics>/per_patient.csv``: ``loss,seed,fold`` + every ``per_patient`` column, the
  volume ``hd95_<unit>``/``nsd_<tol><unit>`` (surface distances pooled over the patient's
  slices), ``dice_at_best`` and ``dice_train_res`` (volume Dice at the training size)
* ``<metrics>/per_model.csv``: one row per model: training facts and test summary metrics
* ``<metrics>/summary.json``: per loss, the mean over seeds of ``per_model``'s metrics
* ``<metrics>/thresholds.csv``: per-patient Dice per threshold on val and test
* ``<metrics>/calibration.csv``: reliability-diagram bins over test pixels
* ``<metrics>/learning_curves.csv``: every ``history.csv`` with ``loss,seed`` in front
* ``<plots>/learning_curves.csv`` (``loss,epoch,val_dice``, mean over seeds) and
  ``<plots>/reliability.csv`` (``loss,mean_prob,frac_positive,count``, bins pooled over seeds):
  tidy tables for ``dvc plots show``, one line per ``loss`` (template ``.dvc/plots/by_loss.json``)
"""

from segloss.evaluation.outputs import write_plot_tables
from segloss.evaluation.stage import Evaluation, ModelResult, evaluate, score_models, write_outputs

__all__ = [
    "Evaluation",
    "ModelResult",
    "evaluate",
    "score_models",
    "write_outputs",
    "write_plot_tables",
]
