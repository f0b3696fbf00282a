"""Recorded random resized crops: the geometry says where every output voxel comes from, in 2D and 3D."""

import numpy as np
import pytest
import torch
from monai.data.utils import list_data_collate
from monai.transforms import Compose, RandScaleIntensityd

from monai_cluster.engines import MultiViewPrepareBatch
from monai_cluster.losses import ContrastivePretrainLoss, LocalContrastiveLoss
from monai_cluster.transforms import (
    MultiViewd,
    RandResizedCrop,
    RandResizedCropd,
    check_geometry,
    corresponding_points,
    identity_geometry,
    map_points,
)
from monai_cluster.transforms.geometry import resample_with_geometry

SIZES = {2: (24, 20), 3: (12, 10, 8)}


def coordinate_image(shape):
    """(D, *shape): channel i holds the normalised coordinate (align_corners=False) of spatial axis i."""
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1 for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


@pytest.mark.parametrize("dims", [2, 3])
def test_output_voxel_shows_the_source_point_the_geometry_names(dims):
    src = coordinate_image(SIZES[dims])
    crop = RandResizedCrop(SIZES[dims], scale=(0.3, 0.9), flip_prob=0.5)
    for seed in range(5):
        crop.set_random_state(seed)
        out = crop(src)
        assert out.shape == src.shape and crop.geometry.shape == (dims + 1, dims + 1)
        # each output voxel centre u maps to A u, and the coordinate image holds exactly that point
        grid = coordinate_image(SIZES[dims]).flatten(1).T[None]  # (1, N, D)
        expected = map_points(grid, crop.geometry[None])[0].T.reshape(src.shape)
        # bilinear interpolation of a linear ramp is exact away from the clamped border half-voxel
        inner = (slice(None),) + tuple(slice(1, -1) for _ in range(dims))
        assert torch.allclose(out[inner], expected[inner], atol=1e-4)


@pytest.mark.parametrize("dims", [2, 3])
def test_geometry_is_a_crop_inside_the_source_with_flips(dims):
    crop = RandResizedCrop(SIZES[dims], scale=(0.2, 0.5), ratio=(0.5, 2.0), flip_prob=0.5)
    crop.set_random_state(0)
    fractions, signs = [], set()
    for _ in range(50):
        crop(torch.zeros(1, *SIZES[dims]))
        g = crop.geometry
        sides, centres = g.diagonal()[:dims].abs(), g[:dims, dims]
        assert torch.all(sides <= 1 + 1e-6) and torch.all(centres.abs() + sides <= 1 + 1e-5)  # inside the source
        assert torch.all(g[:dims, :dims] - torch.diag(g.diagonal()[:dims]) == 0)  # axis-aligned
        fractions.append(float(sides.prod()))
        signs.update(torch.sign(g.diagonal()[:dims]).tolist())
    assert min(fractions) >= 0.2 - 1e-5 and max(fractions) <= 0.5 + 1e-5
    assert signs == {-1.0, 1.0}


@pytest.mark.parametrize("dims", [2, 3])
def test_multiview_views_differ_in_geometry_and_positives_correspond(dims):
    """Global views get their own crop and flips; the recorded geometry finds the same source point in both."""
    src = coordinate_image(SIZES[dims])
    views = MultiViewd(
        keys="image",
        transform=[RandResizedCropd("image", SIZES[dims], scale=(0.4, 1.0)), RandScaleIntensityd("image", 0.0, 1.0)],
    )
    views.set_random_state(3)
    samples = [views({"image": src.clone()}) for _ in range(6)]
    g1 = torch.stack([s["image_geometry"] for s in samples])
    g2 = torch.stack([s["image_geometry_1"] for s in samples])
    assert not torch.allclose(g1, g2)  # the two views of each image differ in geometry ...
    x1 = torch.stack([s["image"] for s in samples])
    x2 = torch.stack([s["image_1"] for s in samples])
    assert (x1 - x2).abs().amax() > 0.1  # ... so their pixels differ
    p1, p2, valid = corresponding_points(g1, g2, 32, torch.Generator().manual_seed(0))
    assert valid.float().mean() > 0.5
    from monai_cluster.losses.local_contrastive import _sample_at

    # the coordinate image's value at a point is the source point it shows: equal in both views
    a, b = _sample_at(x1, p1), _sample_at(x2, p2)  # (B, K, D)
    src_points = map_points(p1, g1)
    # the outer half-voxel of every image is clamped, and interpolation reaches one voxel further
    border = [1 - 2.5 / n for n in SIZES[dims]]
    inner = lambda p: (p.abs() < torch.tensor(border)).all(-1)  # noqa: E731
    ok = valid & inner(p1) & inner(p2) & inner(src_points)
    assert ok.any()
    assert torch.allclose(a[ok], b[ok], atol=1e-4)
    assert torch.allclose(a[ok], map_points(p1, g1)[ok], atol=1e-4)


def test_corresponding_points_of_identical_views_are_identical_and_valid():
    g = torch.stack([identity_geometry(2)] * 3)
    p1, p2, valid = corresponding_points(g, g, 16, torch.Generator().manual_seed(1))
    assert p1.shape == (3, 16, 2) and valid.all() and torch.allclose(p1, p2)


def test_disjoint_views_have_no_valid_point():
    left, right = torch.eye(3)[None].clone(), torch.eye(3)[None].clone()
    left[0, :2, :2] *= 0.3
    right[0, :2, :2] *= 0.3
    left[0, 1, 2], right[0, 1, 2] = -0.6, 0.6
    _, _, valid = corresponding_points(left, right, 8)
    assert not valid.any()


@pytest.mark.parametrize("dims", [2, 3])
def test_local_loss_with_geometry_matches_through_the_crops(dims):
    """Dense maps of two differently cropped views: right geometry -> low loss; ignoring it -> high loss."""
    torch.manual_seed(0)
    size = SIZES[dims]
    source = torch.nn.functional.interpolate(
        torch.randn(4, 16, *(max(2, s // 4) for s in size)), size=size, mode="bilinear" if dims == 2 else "trilinear"
    )
    crop = RandResizedCrop(size, scale=(0.5, 0.9), flip_prob=0.5)
    crop.set_random_state(1)
    f1, f2, g1, g2 = [], [], [], []
    for s in source:
        f1.append(crop(s)), g1.append(crop.geometry)
        f2.append(crop(s)), g2.append(crop.geometry)
    f1, f2, g1, g2 = map(torch.stack, (f1, f2, g1, g2))
    loss = LocalContrastiveLoss(temperature=0.1, num_locations=16)
    gen = torch.Generator().manual_seed(0)
    matched = loss(f1, f2, generator=gen, geometry1=g1, geometry2=g2)
    unmatched = loss(f1, f2, generator=torch.Generator().manual_seed(0))  # same pixel index, wrong anatomy
    assert torch.isfinite(matched) and matched < 0.6 * unmatched
    per = LocalContrastiveLoss(0.1, 16, reduction="none")(f1, f2, geometry1=g1, geometry2=g2)
    assert per.shape == (4, 32)


def test_local_loss_geometry_gradients_and_errors():
    f1 = torch.randn(2, 8, 16, 16, requires_grad=True)
    f2 = torch.randn(2, 8, 16, 16, requires_grad=True)
    g = torch.stack([identity_geometry(2)] * 2)
    loss = LocalContrastiveLoss(0.2, 8)(f1, f2, geometry1=g, geometry2=g.flip(0))
    loss.backward()
    assert torch.isfinite(f1.grad).all() and f1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="both be given"):
        LocalContrastiveLoss()(f1, f2, geometry1=g)
    with pytest.raises(ValueError, match="geometry1"):
        LocalContrastiveLoss()(f1, f2, geometry1=g[:1], geometry2=g[:1])
    with pytest.raises(ValueError, match="geometry2 must be"):
        LocalContrastiveLoss()(f1, f2, geometry1=g, geometry2=torch.stack([identity_geometry(3)] * 2))


def test_prepare_batch_and_pretrain_loss_carry_geometry():
    views = MultiViewd(keys="image", transform=RandResizedCropd("image", (32, 32)))
    views.set_random_state(0)
    batch = list_data_collate([views({"image": torch.rand(1, 32, 32)}) for _ in range(3)])
    inputs, targets = MultiViewPrepareBatch(num_views=2)(batch)
    assert inputs.shape == (6, 1, 32, 32) and targets["geometry"].shape == (2, 3, 3, 3)
    assert torch.equal(targets["geometry"][1], batch["image_geometry_1"])
    dense = torch.randn(6, 4, 8, 8)
    loss = ContrastivePretrainLoss(None, LocalContrastiveLoss(0.1, 8), 0.0, 1.0)
    value = loss({"dense": dense}, targets)
    expected = LocalContrastiveLoss(0.1, 8)  # same draw when the global RNG is reseeded
    torch.manual_seed(5)
    value = loss({"dense": dense}, targets)
    torch.manual_seed(5)
    direct = expected(dense[:3], dense[3:], geometry1=targets["geometry"][0], geometry2=targets["geometry"][1])
    assert torch.allclose(value, direct)
    with pytest.raises(ValueError, match="compare unmatched pixels"):
        ContrastivePretrainLoss(None, lambda a, b: (a - b).pow(2).mean(), 0.0, 1.0)({"dense": dense}, targets)
    del batch["image_geometry_1"]
    with pytest.raises(ValueError, match="lacks"):
        MultiViewPrepareBatch(num_views=2)(batch)


def test_dictionary_crop_keeps_image_and_label_aligned_and_is_reproducible():
    label = (coordinate_image((32, 32))[0:1] > 0).float()
    data = {"image": label.clone() * 0.5, "label": label}
    crop = RandResizedCropd(["image", "label"], (32, 32), mode=["bilinear", "nearest"])
    crop.set_random_state(7)
    a = crop(data)
    crop.set_random_state(7)
    b = crop(data)
    assert torch.equal(a["image_geometry"], b["image_geometry"]) and torch.equal(a["label"], b["label"])
    assert set(torch.unique(a["label"]).tolist()) <= {0.0, 1.0}
    assert torch.allclose((a["image"] > 0.25).float(), a["label"], atol=0) or (
        ((a["image"] > 0.25).float() != a["label"]).float().mean() < 0.05
    )
    assert "label_geometry" not in a


def test_numpy_input_and_bad_arguments():
    out = RandResizedCrop((16, 16))(np.random.rand(2, 20, 20).astype(np.float32))
    assert isinstance(out, np.ndarray) and out.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="scale"):
        RandResizedCrop(16, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="scale"):
        RandResizedCrop(16, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="ratio"):
        RandResizedCrop(16, ratio=(2.0, 1.0))
    with pytest.raises(ValueError, match="mode"):
        RandResizedCrop(16, mode="cubic")
    with pytest.raises(ValueError, match="spatial axes"):
        RandResizedCrop((16, 16))(torch.zeros(1, 8, 8, 8))
    with pytest.raises(ValueError, match="last row"):
        check_geometry(torch.ones(3, 3))
    with pytest.raises(ValueError, match="singular"):
        check_geometry(torch.diag(torch.tensor([0.0, 1.0, 1.0])))
    with pytest.raises(TypeError, match="geometry"):
        check_geometry([[1, 0], [0, 1]])


def test_resample_with_identity_geometry_is_the_image_at_same_size():
    img = torch.rand(3, 12, 10)
    assert torch.allclose(resample_with_geometry(img, identity_geometry(2), (12, 10)), img, atol=1e-5)
