"""Patient-level train/val/test split, seeded and stratified by tumour burden.

Why patient level: slices of one patient are near-duplicates, so a slice-level split leaks.
Why stratified: with few patients a random split can leave val or test without tumour.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from segloss.config.data import check_fractions
from segloss.data.folds import ranking
from segloss.data.prepared import SPLITS
from segloss.errors import ConfigError


def split_counts(
    n_patients: int, fractions: Mapping[str, float], setting: str = "data.split"
) -> dict[str, int]:
    """Patients per split (largest remainder); every split gets at least one patient."""
    check_fractions(fractions, setting)
    values = np.array([float(fractions[name]) for name in SPLITS])
    exact = values * n_patients
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: n_patients - counts.sum()]] += 1
    if (counts < 1).any():
        raise ConfigError(
            f"{setting}: fractions {dict(fractions)} of {n_patients} patients give "
            f"{dict(zip(SPLITS, counts.tolist(), strict=True))}: every split needs a patient"
        )
    return dict(zip(SPLITS, counts.tolist(), strict=True))


def split_patients(
    burden: Mapping[str, float],
    fractions: Mapping[str, float],
    seed: int,
    strata: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Map each patient to a split.

    Tumour-bearing patients are ranked by stratum (``strata``, where given) and burden (most
    first), the seed shuffling ranks within
    strata of about ``n / smallest split`` neighbours, and tumour-free patients follow in
    seeded order. They are dealt in that order, each to the split furthest below its share
    (empty splits first), so every split gets tumour-bearing patients whenever there are at
    least three, and every burden level is spread over all splits.
    """
    names = sorted(burden)
    counts = split_counts(len(names), fractions)
    target = np.array([counts[s] for s in SPLITS])
    rng = np.random.default_rng(seed)
    stratum = max(1, len(names) // int(target.min()))
    ranked = sorted((n for n in names if burden[n] > 0), key=ranking(burden, strata))
    order = [
        name
        for start in range(0, len(ranked), stratum)
        for name in rng.permutation(ranked[start : start + stratum])
    ] + list(rng.permutation([n for n in names if burden[n] <= 0]))
    share = target / len(names)
    taken = np.zeros(len(SPLITS), int)
    assignment = {}
    for i, name in enumerate(order):
        deficit = share * (i + 1) - taken + (taken == 0)
        choice = int(np.argmax(np.where(taken < target, deficit, -np.inf)))
        taken[choice] += 1
        assignment[str(name)] = SPLITS[choice]
    return assignment
