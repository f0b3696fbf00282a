"""Property-based tests (hypothesis) of the transforms and losses over random shapes, dtypes and spatial ranks.

Properties: outputs are finite, shapes are as documented, dictionary and array (or functional and module)
forms agree, and random flips/rotations undo exactly. Example counts are small (the file runs in well under a
minute on one core); ``derandomize=True`` makes every run draw the same examples, so a failure reproduces.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from monai.transforms import RandGaussianNoise, RandGaussianNoised, ScaleIntensity, ScaleIntensityd

from monai_cluster.clustering import PseudoClassTable, read_pseudo_class_table, write_pseudo_class_table
from monai_cluster.clustering.dec import student_t_assignment, target_distribution
from monai_cluster.losses import (
    AssignmentEntropyLoss,
    ClusterGuidedContrastiveLoss,
    DECClusteringLoss,
    ELBOLoss,
    GlobalContrastiveLoss,
    LocalContrastiveLoss,
    PatchDiscriminationLoss,
    RegionDiscriminationLoss,
    cluster_guided_nt_xent,
    global_contrastive_loss,
    local_contrastive_loss,
    patch_discrimination_loss,
    region_discrimination_loss,
)
from monai_cluster.transforms import (
    MultiView,
    MultiViewd,
    PseudoClass,
    PseudoClassd,
    RandFlipRot90,
    RandFlipRot90d,
    RandSlice,
    RandSliced,
    SlicePartition,
    SlicePartitiond,
    apply_flip_rot90,
    undo_flip_rot90,
)

FAST = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FLOAT_DTYPES = st.sampled_from([torch.float32, torch.float64])
NP_DTYPES = st.sampled_from([np.float32, np.float64, np.int16, np.uint8])


@st.composite
def images(draw, min_side: int = 2, max_side: int = 7, dtypes=NP_DTYPES):
    """A channel-first numpy image ``(C, *spatial)``, 2D or 3D, of a random dtype."""
    spatial_dims = draw(st.sampled_from([2, 3]))
    shape = (draw(st.integers(1, 3)),) + tuple(draw(st.integers(min_side, max_side)) for _ in range(spatial_dims))
    seed = draw(st.integers(0, 2**16))
    dtype = draw(dtypes)
    values = np.random.default_rng(seed).normal(0, 50, shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.round(values), info.min, info.max)
    return values.astype(dtype)


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)


# ------------------------------------------------------------------------------------------------ transforms


@FAST
@given(img=images(), num_views=st.integers(2, 4), seed=st.integers(0, 1000))
def test_multiview_views_are_finite_with_input_shape_and_distinct(img, num_views, seed):
    x = img.astype(np.float32)
    views = MultiView(RandGaussianNoise(prob=1.0, std=0.5), num_views=num_views).set_random_state(seed)(x)
    assert len(views) == num_views
    for view in views:
        assert tuple(view.shape) == x.shape and np.isfinite(_np(view)).all()
    assert not np.array_equal(_np(views[0]), _np(views[1]))  # two views never share a draw


@FAST
@given(img=images(), num_views=st.integers(2, 3))
def test_multiview_array_and_dictionary_forms_agree(img, num_views):
    """With a deterministic chain every view is the transformed image, in both forms."""
    expected = _np(ScaleIntensity()(img))
    arr_views = MultiView(ScaleIntensity(), num_views=num_views).set_random_state(0)(img)
    out = MultiViewd("image", ScaleIntensityd("image"), num_views=num_views).set_random_state(0)({"image": img})
    assert sorted(out) == ["image"] + [f"image_{i}" for i in range(1, num_views)]
    dict_views = [out["image"]] + [out[f"image_{i}"] for i in range(1, num_views)]
    for a, d in zip(arr_views, dict_views):
        np.testing.assert_allclose(_np(a), expected, rtol=1e-6)
        np.testing.assert_allclose(_np(d), expected, rtol=1e-6)
        assert np.isfinite(_np(d)).all()


@FAST
@given(img=images(), seed=st.integers(0, 1000))
def test_multiviewd_intensity_only_keeps_shape_and_other_entries(img, seed):
    x = img.astype(np.float32)
    t = MultiViewd("image", RandGaussianNoised("image", prob=1.0), intensity_only=True).set_random_state(seed)
    out = t({"image": x, "key": "images/a.png"})
    assert out["key"] == "images/a.png"
    assert tuple(out["image"].shape) == tuple(out["image_1"].shape) == x.shape


@FAST
@given(
    num_slices=st.integers(1, 40),
    data=st.data(),
)
def test_slice_partition_is_monotone_onto_and_forms_agree(num_slices, data):
    num_partitions = data.draw(st.integers(1, num_slices))
    t, td = SlicePartition(num_partitions), SlicePartitiond(num_partitions)
    parts = [t(i, num_slices) for i in range(num_slices)]
    assert parts == sorted(parts) and set(parts) == set(range(num_partitions))  # monotone and every partition used
    index = data.draw(st.integers(0, num_slices - 1))
    out = td({"slice_index": np.int64(index), "num_slices": torch.tensor(num_slices)})
    assert out["partition"].dtype == np.int64 and int(out["partition"]) == parts[index]


@FAST
@given(img=images(min_side=2, max_side=6), axis=st.integers(-3, 2), seed=st.integers(0, 1000))
def test_rand_slice_array_and_dictionary_agree(img, axis, seed):
    if img.ndim != 4:
        img = np.stack([img] * 3, axis=-1)  # make a (C, H, W, D) volume of any drawn 2D image
    a = RandSlice(axis=axis).set_random_state(seed)
    d = RandSliced(("image", "label"), axis=axis).set_random_state(seed)
    label = (img > 0).astype(np.uint8)
    out_a = a(img)
    out_d = d({"image": img, "label": label})
    dim = axis % 3 + 1
    expected_shape = tuple(s for i, s in enumerate(img.shape) if i != dim)
    assert tuple(out_a.shape) == tuple(out_d["image"].shape) == tuple(out_d["label"].shape) == expected_shape
    np.testing.assert_array_equal(_np(out_a), _np(out_d["image"]))
    assert int(out_d["slice_index"]) == a.slice_index and int(out_d["num_slices"]) == img.shape[dim]
    np.testing.assert_array_equal(_np(out_d["label"]), np.take(label, a.slice_index, axis=dim))


@FAST
@given(img=images(), seed=st.integers(0, 1000), prob=st.sampled_from([0.0, 0.5, 1.0]))
def test_flip_rot90_forms_agree_and_keep_values(img, seed, prob):
    a = RandFlipRot90(prob=prob).set_random_state(seed)
    d = RandFlipRot90d(("image", "label"), prob=prob).set_random_state(seed)
    out_a = a(img)
    out_d = d({"image": img, "label": img.copy()})
    np.testing.assert_array_equal(out_d["image_flip_rot"], a.last_record)
    np.testing.assert_array_equal(_np(out_a), _np(out_d["image"]))
    np.testing.assert_array_equal(_np(out_d["image"]), _np(out_d["label"]))  # image and label stay aligned
    assert out_d["image_flip_rot"].dtype == np.int64 and out_d["image_flip_rot"].shape == (img.ndim + 2,)
    # a flip/rotation only permutes voxels
    np.testing.assert_array_equal(np.sort(_np(out_a).ravel()), np.sort(img.ravel().astype(_np(out_a).dtype)))


@FAST
@given(
    spatial_dims=st.sampled_from([2, 3]),
    batch=st.integers(1, 4),
    channels=st.integers(1, 3),
    side=st.integers(2, 6),
    dtype=FLOAT_DTYPES,
    seed=st.integers(0, 1000),
)
def test_undo_flip_rot90_round_trip_is_exact(spatial_dims, batch, channels, side, dtype, seed):
    """Square grids: any record per sample; the undone batch equals the original exactly, gradients included."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *([side] * spatial_dims), generator=gen, dtype=dtype, requires_grad=True)
    t = RandFlipRot90().set_random_state(seed)
    views, records = [], []
    for b in range(batch):
        views.append(torch.as_tensor(t(x[b])))
        records.append(t.last_record)
    undone = undo_flip_rot90(torch.stack(views), np.stack(records))
    assert undone.shape == x.shape and undone.dtype == dtype
    torch.testing.assert_close(undone, x, rtol=0, atol=0)
    undone.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


@FAST
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(2, 5), st.integers(3, 6), st.integers(2, 4)),
    seed=st.integers(0, 1000),
)
def test_undo_flip_rot90_on_non_square_volumes(shape, seed):
    """Non-square planes: RandFlipRot90 only rotates them by 0 or 180 degrees, so shapes and the inverse hold."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    t = RandFlipRot90().set_random_state(seed)
    y = torch.as_tensor(t(x))
    assert y.shape == x.shape
    torch.testing.assert_close(undo_flip_rot90(y[None], t.last_record)[0], x, rtol=0, atol=0)
    torch.testing.assert_close(torch.as_tensor(apply_flip_rot90(x, t.last_record)), y, rtol=0, atol=0)


@st.composite
def tables(draw):
    """A valid nested pseudo-class table of 1-12 keys with 1-3 levels."""
    n = draw(st.integers(1, 12))
    levels = draw(st.integers(1, 3))
    fine = np.array(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)))
    columns, labels = [], fine
    for _ in range(levels):
        _, labels = np.unique(labels, return_inverse=True)  # dense ids 0..k-1
        columns.append(labels.ravel())
        labels = labels.ravel() // 2  # merge pairs of clusters into the next coarser level
    columns = columns[::-1]
    num_clusters = []
    for col in columns:
        num_clusters.append(max(int(col.max()) + 1, (num_clusters[-1] + 1) if num_clusters else 1))
    keys = [f"images/{i:03d}.png" for i in range(n)]
    return PseudoClassTable(keys, np.stack(columns, axis=1), tuple(num_clusters), "hypothesis")


@FAST
@given(table=tables(), data=st.data())
def test_pseudo_class_forms_agree(table, data):
    key = data.draw(st.sampled_from(table.keys))
    a = PseudoClass(table)(key)
    d = PseudoClassd(table)({"key": key, "image": None})
    assert a.dtype == np.int64 and a.shape == (table.num_levels,)
    np.testing.assert_array_equal(a, d["pseudo_class"])
    np.testing.assert_array_equal(a, table.labels[table.keys.index(key)])
    a[0] = -1  # the returned array is a copy: the table is not changed through it
    assert table.lookup(key)[0] >= 0


KEYS = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), min_size=1, max_size=10),
    min_size=1,
    max_size=6,
    unique=True,
)


@settings(FAST, max_examples=25)
@given(keys=KEYS, model=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=9))
@example(keys=["images/a\u2028b.png", "x\x1e.png", "c,d.png", '"q".png', "#h.png"], model="ae, epoch 3")
def test_pseudo_class_table_file_round_trip_with_any_key(tmp_path_factory, keys, model):
    """Any key a file system can hold (commas, quotes, '#', Unicode line separators such as \\u2028) survives."""
    fine = np.arange(len(keys))[:, None]
    labels = np.concatenate([fine % 2, fine], axis=1)  # every fine cluster inside one coarse cluster
    table = PseudoClassTable(keys, labels, (2, len(keys) + 2), model.strip())
    path = write_pseudo_class_table(table, tmp_path_factory.mktemp("table") / "pseudo_classes.csv")
    assert read_pseudo_class_table(path, expected_keys=keys) == table


# ----------------------------------------------------------------------------------------------------- losses


@st.composite
def embedding_pairs(draw, max_batch: int = 8):
    batch = draw(st.integers(2, max_batch))
    features = draw(st.integers(1, 16))
    dtype = draw(FLOAT_DTYPES)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))  # tiny and huge embeddings: the loss normalises them
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    z1 = (torch.randn(batch, features, generator=gen, dtype=dtype) * scale).requires_grad_()
    z2 = (torch.randn(batch, features, generator=gen, dtype=dtype) * scale).requires_grad_()
    return z1, z2


TEMPERATURES = st.sampled_from([0.005, 0.07, 0.5, 2.0])


def _finite_grads(*tensors: torch.Tensor) -> None:
    for t in tensors:
        assert t.grad is not None and torch.isfinite(t.grad).all()


@FAST
@given(pair=embedding_pairs(), temperature=TEMPERATURES, levels=st.integers(1, 3), data=st.data())
def test_cluster_guided_loss_finite_shapes_and_forms_agree(pair, temperature, levels, data):
    z1, z2 = pair
    batch = z1.shape[0]
    pc = torch.tensor(data.draw(st.lists(st.integers(0, 2), min_size=batch * levels, max_size=batch * levels)))
    pc = pc.view(batch, levels)
    per_view = ClusterGuidedContrastiveLoss(temperature, reduction="none")(z1, z2, pc)
    assert per_view.shape == (2 * batch,) and per_view.dtype == z1.dtype
    assert torch.isfinite(per_view).all() and (per_view >= -1e-6).all()  # -log of a probability
    mean = cluster_guided_nt_xent(z1, z2, pc, temperature=temperature)
    torch.testing.assert_close(mean, per_view.mean())
    mean.backward()
    _finite_grads(z1, z2)


@FAST
@given(pair=embedding_pairs(), temperature=TEMPERATURES, num_partitions=st.integers(1, 3), data=st.data())
def test_global_loss_finite_shapes_and_forms_agree(pair, temperature, num_partitions, data):
    z1, z2 = pair
    batch = z1.shape[0]
    partitions = torch.tensor(data.draw(st.lists(st.integers(0, num_partitions - 1), min_size=batch, max_size=batch)))
    volumes = torch.tensor(data.draw(st.lists(st.integers(0, 2), min_size=batch, max_size=batch)))
    per_view = GlobalContrastiveLoss(temperature, reduction="none")(z1, z2, partitions, volumes)
    assert per_view.shape == (2 * batch,) and torch.isfinite(per_view).all()
    value = global_contrastive_loss(z1, z2, partitions, volumes, temperature=temperature, reduction="sum")
    torch.testing.assert_close(value, per_view.sum())
    value.backward()
    _finite_grads(z1, z2)


@st.composite
def dense_pairs(draw, min_side: int = 2, max_side: int = 8):
    spatial_dims = draw(st.sampled_from([2, 3]))
    batch = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 6))
    spatial = tuple(draw(st.integers(min_side, max_side)) for _ in range(spatial_dims))
    dtype = draw(FLOAT_DTYPES)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    f1 = torch.randn(batch, channels, *spatial, generator=gen, dtype=dtype).requires_grad_()
    f2 = torch.randn(batch, channels, *spatial, generator=gen, dtype=dtype).requires_grad_()
    return f1, f2


@FAST
@given(pair=dense_pairs(), temperature=TEMPERATURES, num_locations=st.integers(2, 6), data=st.data())
def test_local_loss_finite_shapes_and_forms_agree(pair, temperature, num_locations, data):
    f1, f2 = pair
    region = data.draw(st.integers(1, min(f1.shape[2:])))
    loss = LocalContrastiveLoss(temperature, num_locations=num_locations, region_size=region, reduction="none")
    regions = int(np.prod([s // region for s in f1.shape[2:]]))
    if regions < 2:  # documented: at least two regions are needed to contrast
        with pytest.raises(ValueError, match=rf"f1 must hold at least 2 regions of size {region}"):
            loss(f1, f2)
        return
    per_item = loss(f1, f2, generator=torch.Generator().manual_seed(3))
    k = min(num_locations, regions)  # documented: K = min(num_locations, regions)
    assert per_item.shape == (f1.shape[0], 2 * k) and torch.isfinite(per_item).all()
    functional = local_contrastive_loss(
        f1, f2, temperature, num_locations, region, reduction="mean", generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(functional, per_item.mean())
    functional.backward()
    _finite_grads(f1, f2)


@FAST
@given(pair=dense_pairs(min_side=2, max_side=6), temperature=TEMPERATURES, data=st.data())
def test_patch_discrimination_finite_shapes_and_forms_agree(pair, temperature, data):
    f1, f2 = pair
    grid = data.draw(st.integers(1, min(f1.shape[2:])))
    patches = f1.shape[0] * grid ** (f1.ndim - 2)
    if 2 * patches < 3:  # the criterion needs a negative besides the positive
        return
    per_patch = PatchDiscriminationLoss(temperature, grid_size=grid, reduction="none")(f1, f2)
    assert per_patch.shape == (2 * patches,) and torch.isfinite(per_patch).all()
    value = patch_discrimination_loss(f1, f2, temperature, grid_size=grid)
    torch.testing.assert_close(value, per_patch.mean())
    value.backward()
    _finite_grads(f1, f2)


@FAST
@given(pair=dense_pairs(), clusters=st.integers(2, 5), granularity=st.sampled_from(["region", "pixel"]))
def test_region_discrimination_and_entropy_finite_and_forms_agree(pair, clusters, granularity):
    embedding, _ = pair
    logits = torch.randn(embedding.shape[0], clusters, *embedding.shape[2:], dtype=embedding.dtype)
    assignment = torch.softmax(logits, dim=1).requires_grad_()
    per_item = RegionDiscriminationLoss(granularity=granularity, reduction="none")(embedding, assignment)
    expected = (embedding.shape[0], clusters) if granularity == "region" else (embedding.shape[0], *embedding.shape[2:])
    assert per_item.shape == expected and torch.isfinite(per_item).all()
    value = region_discrimination_loss(embedding, assignment, granularity=granularity)
    torch.testing.assert_close(value, per_item.mean())
    entropy = AssignmentEntropyLoss(reduction="none")(assignment)
    assert entropy.shape == assignment.shape and torch.isfinite(entropy).all()
    assert (entropy >= 0).all() and (entropy <= 1 + 1e-6).all()  # binary entropy in bits
    (value + entropy.mean()).backward()
    _finite_grads(embedding, assignment)


@FAST
@given(
    pair=dense_pairs(),
    latent=st.integers(1, 8),
    beta=st.sampled_from([0.0, 1.0, 4.0]),
    recon=st.sampled_from(["mse", "bce"]),
    logvar_scale=st.sampled_from([0.1, 5.0]),
)
def test_elbo_finite_non_negative_kl_and_components_agree(pair, latent, beta, recon, logvar_scale):
    x, reconstruction = pair
    if recon == "bce":
        x, reconstruction = torch.sigmoid(x.detach()), torch.sigmoid(reconstruction).detach().requires_grad_()
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(x.shape[0], latent, generator=gen, dtype=x.dtype).requires_grad_()
    logvar = (torch.randn(x.shape[0], latent, generator=gen, dtype=x.dtype) * logvar_scale).requires_grad_()
    loss = ELBOLoss(beta=beta, recon=recon, reduction="none")
    parts = loss.components(reconstruction, x.detach(), mu, logvar)
    assert parts["loss"].shape == parts["kl"].shape == (x.shape[0],)
    assert torch.isfinite(parts["loss"]).all() and (parts["kl"] >= -1e-6).all() and (parts["reconstruction"] >= 0).all()
    torch.testing.assert_close(parts["loss"], parts["reconstruction"] + beta * parts["kl"])
    mean = ELBOLoss(beta=beta, recon=recon)(reconstruction, x.detach(), mu, logvar)
    torch.testing.assert_close(mean, parts["loss"].mean())
    mean.backward()
    _finite_grads(mu, logvar)


@FAST
@given(
    batch=st.integers(1, 8),
    latent=st.integers(1, 6),
    clusters=st.integers(2, 6),
    scale=st.sampled_from([1e-2, 1.0, 1e2]),
    dtype=FLOAT_DTYPES,
)
def test_dec_assignment_target_and_loss_are_distributions(batch, latent, clusters, scale, dtype):
    gen = torch.Generator().manual_seed(batch * 31 + clusters)
    z = (torch.randn(batch, latent, generator=gen, dtype=dtype) * scale).requires_grad_()
    centroids = torch.randn(clusters, latent, generator=gen, dtype=dtype) * scale
    q = student_t_assignment(z, centroids)
    p = target_distribution(q.detach())
    for dist in (q, p):
        assert dist.shape == (batch, clusters) and torch.isfinite(dist).all() and (dist >= 0).all()
        torch.testing.assert_close(dist.sum(1), torch.ones(batch, dtype=dtype))
    per_sample = DECClusteringLoss(reduction="none")(q, p)
    assert per_sample.shape == (batch,) and torch.isfinite(per_sample).all() and (per_sample >= -1e-6).all()
    DECClusteringLoss()(q, p).backward()
    _finite_grads(z)


def test_settings_keep_the_file_fast():
    """Guard: the example budget stays small so the file stays under a minute on one core."""
    assert FAST.max_examples <= 10 and FAST.deadline is None


@pytest.mark.parametrize("form", ["array", "dictionary"])
def test_flip_rot90_identity_when_prob_zero(form):
    img = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    if form == "array":
        t = RandFlipRot90(prob=0.0).set_random_state(0)
        out, record = t(img), t.last_record
    else:
        d = RandFlipRot90d("image", prob=0.0).set_random_state(0)({"image": img})
        out, record = d["image"], d["image_flip_rot"]
    np.testing.assert_array_equal(_np(out), img)
    np.testing.assert_array_equal(record, [0, 0, 0, 0, 1])
