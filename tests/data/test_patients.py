"""Patient-level splits and draws (``monai_cluster.data.patients``): ACDC groups, stratified split, nested draws."""

from __future__ import annotations

import numpy as np
import pytest

from monai_cluster.data.patients import pathology_group, stratified_draw, stratified_split


def test_stratified_split_takes_four_per_group():
    names = [f"patient{i:03d}" for i in range(1, 101) if i % 10 not in (3, 4, 9)]  # 70 patients, 14 per group
    strata = np.array([pathology_group(n) for n in names])
    assert np.bincount(strata).tolist() == [14] * 5
    train, test = stratified_split(strata, 20, seed=0)
    assert np.bincount(strata[test]).tolist() == [4] * 5
    assert len(train) == 50 and not set(train) & set(test)
    again, other = stratified_split(strata, 20, seed=0)[1], stratified_split(strata, 20, seed=1)[1]
    assert np.array_equal(test, again) and not np.array_equal(test, other)
    # uneven: 7 from 5 groups of 14 -> the two extra picks go to two different groups
    assert sorted(np.bincount(strata[stratified_split(strata, 7, seed=3)[1]])) == [1, 1, 1, 2, 2]
    assert pathology_group("patient101_frame01.nii.gz") is None and pathology_group("patient100") == 4
    with pytest.raises(ValueError, match="num_test"):
        stratified_split(strata, 70, seed=0)


def test_stratified_draw_is_seeded_round_the_strata_and_nested():
    units = np.arange(10)
    two = stratified_draw(units, 2, seed=3)
    assert np.array_equal(two, stratified_draw(units, 2, seed=3)) and len(two) == 2
    strata = np.repeat(np.arange(5), 2)
    for seed in range(5):
        two, five = stratified_draw(units, 2, seed, strata), stratified_draw(units, 5, seed, strata)
        assert len(set(strata[two])) == 2 and sorted(strata[five]) == [0, 1, 2, 3, 4]
        assert set(two) <= set(five)  # the round-robin draw is nested
    assert np.array_equal(stratified_draw(units, 10, seed=0), units)
    with pytest.raises(ValueError, match="number of labeled units"):
        stratified_draw(units, 11, seed=0)
    with pytest.raises(ValueError, match="strata must give a stratum"):
        stratified_draw(units, 2, seed=0, strata=strata[:5])
