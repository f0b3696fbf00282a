"""Patients and their groups: patient-level, group-stratified splits and labeled draws.

A labeled "unit" of a volume dataset is a patient, not an image: ACDC stores two frames (end-diastole and
end-systole) per patient, and both must land on the same side of a split, and a labeled budget counts patients.
These helpers work on unit indices ``0 .. U-1`` with one stratum (group) per unit:

- :func:`patient_id` / :func:`pathology_group`: the patient of a file name (``patientNNN`` for ACDC, else the
  file's stem) and the ACDC pathology group its number gives (patients 001-020 group 0, ..., 081-100 group 4).
- :func:`stratified_split`: held-out units spread over the groups in proportion to their sizes (70 ACDC
  patients, 20 held out: 4 per group).
- :func:`stratified_draw`: the labeled units drawn round the groups in a seeded order, one at a time (2 patients
  from two groups, 8 from all five); a larger draw with the same seed contains the smaller one.

These are the protocol of the ACDC label-efficiency benchmark (``BENCHMARKS.md``, "Label efficiency on ACDC"),
which imports them from here, so the bundles and the benchmark pick the same patients for the same seeds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

__all__ = ["ACDC_NUM_GROUPS", "pathology_group", "patient_id", "stratified_draw", "stratified_split"]

_PATIENT = re.compile(r"(patient(\d+))")
ACDC_NUM_GROUPS = 5
"""ACDC's pathology groups: dilated cardiomyopathy, hypertrophic cardiomyopathy, previous infarction, normal,
abnormal right ventricle (20 training patients each, in that order of patient numbers)."""


def patient_id(path: str | os.PathLike) -> str:
    """The patient of a file: ``"patient001"`` for ``.../patient001_frame01.nii.gz``, else the file name's stem.

    Args:
        path: a file path or listing key.

    Raises:
        TypeError: when ``path`` is not a string or path.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}.")
    name = os.path.basename(os.fspath(path))
    match = _PATIENT.search(name)
    if match is not None:
        return match.group(1)
    for suffix in (".nii.gz", ".nii", ".mha", ".nrrd", ".npy", ".npz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def pathology_group(name: str) -> int | None:
    """ACDC pathology group of a patient name (``patient001``-``patient020`` -> 0, ..., ``081-100`` -> 4).

    Returns ``None`` when the name holds no ACDC training patient number (e.g. the ACDC test patients 101-150,
    whose group the number does not give).
    """
    match = _PATIENT.search(str(name))
    if match is None or not 1 <= int(match.group(2)) <= 100:
        return None
    return (int(match.group(2)) - 1) // 20


def stratified_split(strata: Sequence[int] | np.ndarray, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train, test)`` indices of units with stratum labels ``strata``, both sorted.

    The test units are spread over the strata in proportion to their sizes (largest remainders first, ties
    broken by a seeded order), so 70 ACDC patients (14 per group) and ``num_test=20`` give 4 per group; within
    a stratum the seeded permutation decides which units are held out.

    Args:
        strata: ``(U,)`` stratum of each unit.
        num_test: held-out units, in ``[1, U - 1]``.
        seed: the split's seed.

    Raises:
        ValueError: when ``num_test`` is not in ``[1, len(strata) - 1]``.
    """
    strata = np.asarray(strata)
    n = len(strata)
    if not 0 < num_test < n:
        raise ValueError(f"num_test must lie in [1, {n - 1}] for {n} units, got {num_test}.")
    rng = np.random.RandomState(seed)
    values = np.unique(strata)
    sizes = np.array([(strata == v).sum() for v in values])
    quota = sizes * num_test / n
    counts = np.floor(quota).astype(int)
    order = np.lexsort((rng.permutation(len(values)), -(quota - counts)))
    for i in order[: num_test - counts.sum()]:
        counts[i] += 1
    test = []
    for v, k in zip(values, counts):
        members = np.flatnonzero(strata == v)
        test.extend(members[rng.permutation(len(members))[:k]])
    test = np.sort(np.asarray(test, dtype=int))
    return np.setdiff1d(np.arange(n), test), test


def stratified_draw(
    units: Sequence[int] | np.ndarray, num_units: int, seed: int, strata: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """``num_units`` of ``units`` drawn by ``seed``, round the strata when given; sorted.

    Args:
        units: the unit ids to draw from (non-negative integers, e.g. patient indices).
        num_units: how many to draw, in ``[1, len(units)]``; all of them returns ``units`` sorted.
        seed: the draw's seed; the same seed gives the same units whatever else changes.
        strata: ``(max(units) + 1,)`` stratum of each unit id, or ``None`` for a plain seeded permutation. With
            it the strata are visited in a seeded order and each gives its next unit (its own seeded order) in
            turn, so the draw covers as many strata as it can.

    Raises:
        ValueError: when ``num_units`` is not in ``[1, len(units)]`` or ``strata`` does not cover the units.
    """
    units = np.unique(np.asarray(units, dtype=int))
    if not 1 <= num_units <= len(units):
        raise ValueError(f"number of labeled units must lie in [1, {len(units)}], got {num_units}.")
    if num_units == len(units):
        return units
    if strata is None:
        return np.sort(np.random.RandomState(seed).permutation(units)[:num_units])
    strata = np.asarray(strata)
    if len(strata) <= units.max():
        raise ValueError(f"strata must give a stratum for every unit id up to {units.max()}, got {len(strata)}.")
    rng = np.random.RandomState(seed)
    values = np.unique(strata[units])
    queues = [list(rng.permutation(units[strata[units] == v])) for v in values[rng.permutation(len(values))]]
    picked: list[int] = []
    while len(picked) < num_units:
        for queue in queues:
            if queue and len(picked) < num_units:
                picked.append(int(queue.pop(0)))
    return np.sort(np.asarray(picked))
