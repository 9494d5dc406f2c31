"""Patient-level k-fold cross-validation, seeded and stratified by tumour burden.

With ``cv.folds = K >= 2`` every patient is a test patient exactly once: the patients are
dealt into K folds; fold ``f`` tests its own patients and picks its validation patients (best
epoch, threshold choice) from the other folds' patients, the rest train. ``K = 1`` is the
single train/val/test split of :mod:`segloss.data.split`.

Stratification: tumour-bearing patients are ranked by burden (most first) and dealt so that
every run of K consecutive patients spreads over all K folds (the seed decides which fold gets
which); tumour-free patients follow. Validation patients are one per burden stratum of the
remaining patients, so they span small to large tumours too.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from segloss.config import CvConfig
from segloss.errors import ConfigError

ROLES = ("train", "val", "test")


def check_cv(cv: CvConfig, n_patients: int) -> None:
    """The ``cv`` settings checked against the patients there are (ConfigError naming the
    setting)."""
    folds = cv.folds
    if folds > 1:
        if folds > n_patients:
            raise ConfigError(
                f"cv.folds={folds} is more than the {n_patients} patients (groups of images)"
            )
        if n_patients - -(-n_patients // folds) < 2:
            raise ConfigError(
                f"cv.folds={folds} with {n_patients} patients leaves fewer than 2 patients "
                "outside a test fold (one to train, one to validate)"
            )


def ranking(burden: Mapping[str, float], strata: Mapping[str, str] | None = None):
    """Sort key: by the given stratum (a data set's own, e.g. the diagnosis), then burden
    (most first), then name; dealing patients in this order spreads every stratum."""
    strata = strata or {}
    return lambda name: (strata.get(name, ""), -burden[name], name)


def _burden_order(
    burden: Mapping[str, float],
    stratum: int,
    rng: np.random.Generator,
    strata: Mapping[str, str] | None = None,
) -> list:
    """Tumour patients by stratum and burden (most first), shuffled within runs of
    ``stratum``; then tumour-free ones."""
    ranked = sorted((n for n in burden if burden[n] > 0), key=ranking(burden, strata))
    order = [
        str(name)
        for start in range(0, len(ranked), stratum)
        for name in rng.permutation(ranked[start : start + stratum])
    ]
    return order + [str(n) for n in rng.permutation(sorted(n for n in burden if burden[n] <= 0))]


def assign_folds(
    burden: Mapping[str, float],
    folds: int,
    seed: int,
    strata: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Map each patient to its test fold (0..folds-1): sizes differ by at most one.

    Patients are taken in burden order; each goes to a fold with the fewest patients so far,
    picked at random (seeded) among those, so every K consecutive patients land in K
    different folds.
    """
    if not 1 <= folds <= len(burden):
        raise ConfigError(f"cv.folds={folds} must be between 1 and the {len(burden)} patients")
    rng = np.random.default_rng(seed)
    taken = np.zeros(folds, int)
    assignment = {}
    for name in _burden_order(burden, folds, rng, strata):
        free = np.flatnonzero(taken == taken.min())
        choice = int(rng.choice(free))
        taken[choice] += 1
        assignment[name] = choice
    return assignment


def fold_roles(
    burden: Mapping[str, float],
    folds: int,
    seed: int,
    val_fraction: float,
    strata: Mapping[str, str] | None = None,
) -> list[dict[str, list[str]]]:
    """Per fold, the sorted ``train``/``val``/``test`` patients.

    Validation: ``round(val_fraction * rest)`` (at least 1, at most rest - 1) of the patients
    outside the test fold, one drawn (seeded) from each of that many consecutive burden strata.
    """
    test_fold = assign_folds(burden, folds, seed, strata)
    rng = np.random.default_rng([seed, 1])
    out = []
    for fold in range(folds):
        test = sorted(n for n, f in test_fold.items() if f == fold)
        rest = {n: b for n, b in burden.items() if test_fold[n] != fold}
        n_val = min(max(1, round(val_fraction * len(rest))), len(rest) - 1)
        ranked = sorted(rest, key=ranking(rest, strata))
        val = sorted(str(rng.choice(part)) for part in np.array_split(ranked, n_val))
        train = sorted(n for n in rest if n not in val)
        out.append({"train": train, "val": val, "test": test})
    return out


def sweep_values(folds: int) -> str:
    """The sweep's ``cv.fold`` values for ``cv.folds``: every fold, or ``null`` without CV.

    Registered as the OmegaConf resolver ``segloss_folds`` (:func:`register_resolver`), so
    ``cv.fold: ${segloss_folds:${cv.folds}}`` in ``hydra.sweeper.params`` follows ``cv.folds``.
    """
    folds = int(folds)
    return "null" if folds < 2 else ",".join(str(f) for f in range(folds))


def register_resolver() -> None:
    """Register ``segloss_folds`` with OmegaConf (once; entry points call it at import)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("segloss_folds"):
        OmegaConf.register_new_resolver("segloss_folds", sweep_values)
