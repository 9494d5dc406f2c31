"""Patient-level split: counts, no leakage, tumour in every split, seeded, validated fractions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segloss.data.split import split_counts, split_patients
from segloss.errors import ConfigError

DEFAULT = {"train": 0.6, "val": 0.15, "test": 0.25}


def test_default_counts():
    assert split_counts(40, DEFAULT) == {"train": 24, "val": 6, "test": 10}
    assert split_counts(8, DEFAULT) == {"train": 5, "val": 1, "test": 2}


@pytest.mark.parametrize(
    "fractions",
    [
        {"train": 0.6, "val": 0.2, "test": 0.25},
        {"train": 0.5, "val": 0.3, "test": 0.1},
        {"train": 1.2, "val": -0.4, "test": 0.2},
        {"train": 0.75, "test": 0.25},
    ],
)
def test_bad_fractions_name_the_setting(fractions):
    with pytest.raises(ConfigError, match=r"^data\.split"):
        split_counts(40, fractions)


@pytest.mark.parametrize(
    ("n", "fractions"), [(2, DEFAULT), (40, {"train": 0.85, "val": 0.0, "test": 0.15})]
)
def test_a_split_without_patients_is_an_error(n, fractions):
    with pytest.raises(ConfigError, match="every split needs a patient"):
        split_counts(n, fractions)


@settings(max_examples=60, deadline=None)
@given(
    burdens=st.lists(st.one_of(st.just(0.0), st.floats(1e-4, 0.1)), min_size=7, max_size=60),
    seed=st.integers(0, 2**16),
)
def test_every_patient_once_and_tumour_in_every_split(burdens, seed):
    burden = {f"P{i:03d}": b for i, b in enumerate(burdens)}
    assignment = split_patients(burden, DEFAULT, seed)
    assert set(assignment) == set(burden)  # each patient in exactly one split
    counts = split_counts(len(burden), DEFAULT)
    for name, count in counts.items():
        members = [p for p, s in assignment.items() if s == name]
        assert len(members) == count
        if sum(b > 0 for b in burdens) >= 3:
            assert any(burden[p] > 0 for p in members), name


def test_seeded_and_stratified():
    burden = {f"P{i:02d}": (i % 10) / 100 for i in range(40)}
    first = split_patients(burden, DEFAULT, seed=0)
    assert first == split_patients(dict(reversed(burden.items())), DEFAULT, seed=0)
    assert first != split_patients(burden, DEFAULT, seed=1)
    heavy = [p for p, b in burden.items() if b >= 0.07]  # the 12 heaviest
    assert {first[p] for p in heavy} == {"train", "val", "test"}
