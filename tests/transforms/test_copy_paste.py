"""Bidirectional copy-paste: one box mask mixes images and labels alike, both ways, 2D and 3D, seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_cluster.transforms import RandCopyPaste, RandCopyPasted, box_mask, copy_paste


def _box_of(mask: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    idx = np.nonzero(mask)
    start = tuple(int(i.min()) for i in idx)
    size = tuple(int(i.max() - i.min() + 1) for i in idx)
    return start, size


@pytest.mark.parametrize("spatial", [(12, 9), (10, 8, 6)])
def test_images_and_labels_are_mixed_with_one_mask_both_ways(spatial):
    rng = np.random.default_rng(0)
    b = 3
    img_a = torch.as_tensor(rng.normal(size=(b, 2, *spatial)), dtype=torch.float32)
    img_b = torch.as_tensor(rng.normal(size=(b, 2, *spatial)), dtype=torch.float32) + 10.0
    lab_a = torch.ones((b, 1, *spatial))  # class 1 everywhere in a, class 2 everywhere in b
    lab_b = torch.full((b, 1, *spatial), 2.0)
    t = RandCopyPaste(len(spatial), fraction=0.5).set_random_state(3)
    img_ab, img_ba, lab_ab, lab_ba = t(img_a, img_b, lab_a, lab_b)
    m = torch.as_tensor(t.last_mask)
    assert m.shape == spatial and set(m.unique().tolist()) == {0.0, 1.0}
    # every voxel of the mixed image comes from the image whose label the mixed label carries
    from_a = lab_ab == 1
    assert torch.equal(from_a[:, 0], m.bool().expand(b, *spatial))
    assert torch.equal(torch.where(from_a.expand_as(img_ab), img_a, img_b), img_ab)
    assert torch.equal(lab_ba, 3.0 - lab_ab) and torch.equal(torch.where(lab_ba == 1, img_a, img_b), img_ba)
    # the formula itself
    torch.testing.assert_close(img_ab, img_a * m + img_b * (1 - m), rtol=0, atol=0)
    torch.testing.assert_close(img_ba, img_b * m + img_a * (1 - m), rtol=0, atol=0)


@pytest.mark.parametrize("spatial,fraction,size", [((12, 9), 0.5, (6, 4)), ((10, 8, 6), (0.3, 1.0, 0.5), (3, 8, 3))])
def test_box_size_is_the_fraction_of_each_side(spatial, fraction, size):
    t = RandCopyPaste(len(spatial), fraction=fraction)
    for seed in range(20):
        t.set_random_state(seed)
        t(np.zeros((1, *spatial), np.float32), np.ones((1, *spatial), np.float32))
        start, got = _box_of(t.last_mask)
        assert got == size and t.last_box == (start, size)
        assert t.last_mask.sum() == np.prod(size)
        assert all(0 <= s and s + z <= n for s, z, n in zip(start, size, spatial))


def test_box_positions_vary_and_cover_the_range():
    t = RandCopyPaste(2, fraction=0.5).set_random_state(0)
    starts = set()
    for _ in range(200):
        t.randomize((8, 8))
        starts.add(t.last_box[0])
    assert starts == {(i, j) for i in range(5) for j in range(5)}


def test_same_seed_same_mask_other_seed_other_mask():
    x, y = np.zeros((1, 16, 16, 16), np.float32), np.ones((1, 16, 16, 16), np.float32)
    masks = []
    for seed in (7, 7, 8):
        t = RandCopyPaste(3, fraction=0.25).set_random_state(seed)
        masks.append([t(x, y)[0] for _ in range(3)])
    assert all(np.array_equal(a, b) for a, b in zip(masks[0], masks[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(masks[0], masks[2]))


def test_randomize_false_reuses_the_box():
    t = RandCopyPaste(2, fraction=0.5).set_random_state(1)
    a, b = np.zeros((1, 8, 8), np.float32), np.ones((1, 8, 8), np.float32)
    first = t(a, b)[0]
    again = t(a, b, randomize=False)[0]
    assert np.array_equal(first, again)


def test_dictionary_version_mixes_pairs_with_one_mask_and_matches_the_array_version():
    rng = np.random.default_rng(1)
    d = {
        "image": torch.as_tensor(rng.normal(size=(2, 1, 8, 8, 8)), dtype=torch.float32),
        "label": torch.zeros((2, 1, 8, 8, 8)),
        "unlabeled_image": torch.as_tensor(rng.normal(size=(2, 1, 8, 8, 8)), dtype=torch.float32),
        "pseudo_label": torch.ones((2, 1, 8, 8, 8)),
    }
    t = RandCopyPasted(["image", "label"], ["unlabeled_image", "pseudo_label"], spatial_dims=3, fraction=0.5)
    out = t.set_random_state(5)(d)
    ref = RandCopyPaste(3, fraction=0.5).set_random_state(5)
    img_ab, img_ba, lab_ab, lab_ba = ref(d["image"], d["unlabeled_image"], d["label"], d["pseudo_label"])
    assert torch.equal(out["image_mixed"], img_ab) and torch.equal(out["unlabeled_image_mixed"], img_ba)
    assert torch.equal(out["label_mixed"], lab_ab) and torch.equal(out["pseudo_label_mixed"], lab_ba)
    m = torch.as_tensor(out["copy_paste_mask"])
    assert torch.equal(out["label_mixed"][0, 0], 1 - m)  # label 0 from the image inside the box, 1 outside
    assert torch.equal(out["image"], d["image"])  # inputs untouched


def test_copy_paste_on_numpy_and_a_given_mask():
    mask = box_mask((4, 4), (1, 1), (2, 2))
    ab, ba = copy_paste(np.zeros((1, 4, 4)), np.ones((1, 4, 4)), mask)
    assert ab.sum() == 12 and ba.sum() == 4 and ab[0, 1, 1] == 0 and ba[0, 1, 1] == 1


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"spatial_dims": 2, "fraction": 0.0}, ValueError, "fraction"),
        ({"spatial_dims": 2, "fraction": 1.5}, ValueError, "fraction"),
        ({"spatial_dims": 2, "fraction": "half"}, TypeError, "fraction"),
        ({"spatial_dims": 3, "fraction": (0.5, 0.5)}, ValueError, "fraction"),
        ({"spatial_dims": 4}, ValueError, "spatial_dims"),
    ],
)
def test_bad_arguments_are_named(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        RandCopyPaste(**kwargs)


def test_bad_inputs_are_named():
    t = RandCopyPaste(2)
    with pytest.raises(ValueError, match="img_a"):
        t(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="one shape"):
        t(np.zeros((1, 8, 8)), np.zeros((1, 8, 6)))
    with pytest.raises(ValueError, match="label_a"):
        t(np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="both"):
        t(np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="partner_keys"):
        RandCopyPasted(["image", "label"], ["u"], spatial_dims=2)
    with pytest.raises(ValueError, match="missing"):
        RandCopyPasted("image", "u", spatial_dims=2)({"image": np.zeros((1, 8, 8))})
