"""Catalogue of bad in-memory inputs: transforms, losses, networks, clustering, handlers.

Each row is one bad input, the exception type it must raise, and a pattern that the message must match. The
patterns name the offending input AND what was expected (not just "error"), so a change that turns a clear
message into an unclear one fails here. File-based bad inputs (images, tables, checkpoints, atomic writes) are
in ``test_bad_inputs_files.py``; bundle-level ones in ``test_bad_inputs_bundles.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.transforms import RandGaussianNoised, RandRotate90d, RepeatChanneld
from torch import nn

from monai_cluster.clustering import (
    PseudoClassTable,
    compute_pseudo_class_table,
    extract_features,
    hierarchical_pseudo_classes,
    kmeans,
)
from monai_cluster.handlers import NonFiniteLossHandler
from monai_cluster.losses import (
    ClusterGuidedContrastiveLoss,
    ContrastivePretrainLoss,
    DECClusteringLoss,
    ELBOLoss,
    GlobalContrastiveLoss,
    LocalContrastiveLoss,
    PatchDiscriminationLoss,
    RegionDiscriminationLoss,
)
from monai_cluster.networks import ContrastivePretrainNet, FeatureAutoEncoder
from monai_cluster.networks.nets import ContrastiveAutoEncoder, LocalDiscriminationNet
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
    undo_flip_rot90,
)

NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class Case:
    """One catalogue row: ``call()`` must raise ``error`` with a message matching ``match`` (re.search)."""

    id: str
    call: Callable[[], object]
    error: type[BaseException]
    match: str


def _z(b: int = 4, f: int = 8, fill: float | None = None) -> torch.Tensor:
    z = torch.randn(b, f)
    return z.fill_(fill) if fill is not None else z


def _map(*shape: int, fill: float | None = None) -> torch.Tensor:
    x = torch.randn(*shape)
    return x.fill_(fill) if fill is not None else x


def _table(keys=("images/a.png", "images/b.png")) -> PseudoClassTable:
    return PseudoClassTable(list(keys), np.array([[0, 0], [1, 1]][: len(keys)]), (2, 4), "test features")


def _with_nan_row(n: int = 10, f: int = 4, row: int = 2) -> np.ndarray:
    x = np.random.default_rng(0).random((n, f), dtype=np.float32)
    x[row, 1] = np.nan
    return x


_SMALL_UNET = (4, 4, 8, 8, 16, 4)


def _pretrain_net(spatial_dims: int = 2) -> ContrastivePretrainNet:
    return ContrastivePretrainNet(spatial_dims, 1, features=_SMALL_UNET, global_dim=8, dense_dim=4)


class _NaNEncoder(nn.Module):
    """Feature model that returns NaN for images whose first pixel is negative (a "bad image")."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)[:, :3].clone()
        f[x.flatten(1)[:, 0] < 0] = NAN
        return f


def _extract_with_bad_image():
    data = [{"image": torch.ones(1, 4, 4), "key": f"images/{i}.png"} for i in range(4)]
    data[2]["image"] = -torch.ones(1, 4, 4)
    return extract_features(_NaNEncoder(), data, feature_fn=lambda m, x: m(x), progress=False)


def _engine_with_output(output) -> Engine:
    engine = Engine(lambda e, b: output)
    handler = NonFiniteLossHandler()
    handler.attach(engine)
    return engine


TRANSFORM_CASES = [
    Case(
        "multiview-one-view",
        lambda: MultiView(lambda x: x, num_views=1),
        ValueError,
        r"num_views must be an integer >= 2, got 1",
    ),
    Case(
        "multiviewd-missing-key",
        lambda: MultiViewd("image", RandGaussianNoised("image", prob=1.0))({"label": np.zeros((1, 4, 4))}),
        ValueError,
        r"MultiViewd: key\(s\) \['image'\] are missing from the sample \(it has \['label'\]\)",
    ),
    Case(
        "multiviewd-intensity-only-with-spatial-transform",
        lambda: MultiViewd("image", RandRotate90d("image", prob=1.0), intensity_only=True),
        ValueError,
        r"intensity_only=True.*spatial transform\(s\).*RandRotate90d",
    ),
    Case(
        "multiviewd-intensity-only-chain-changes-channel-count",
        lambda: MultiViewd("image", RepeatChanneld("image", 3), intensity_only=True)({"image": np.zeros((1, 4, 4))}),
        ValueError,
        r"view 0 of 'image' has shape \(3, 4, 4\), but the input has shape \(1, 4, 4\); the transform chain must not",
    ),
    Case(
        "multiviewd-view-key-already-present",
        lambda: MultiViewd("image", RandGaussianNoised("image", prob=1.0))(
            {"image": np.zeros((1, 4, 4)), "image_1": np.zeros((1, 4, 4))}
        ),
        ValueError,
        r"overwrite view key\(s\) \['image_1'\]",
    ),
    Case(
        "flip-rot90-missing-channel-dim",
        lambda: RandFlipRot90()(np.zeros((8, 8))),
        ValueError,
        r"img must be channel-first \(C, H, W\) or \(C, H, W, D\), got shape \(8, 8\)",
    ),
    Case(
        "flip-rot90-rank-5",
        lambda: RandFlipRot90()(np.zeros((1, 1, 8, 8, 8))),
        ValueError,
        r"img must be channel-first .*got shape \(1, 1, 8, 8, 8\)",
    ),
    Case(
        "flip-rot90d-keys-of-different-shapes",
        lambda: RandFlipRot90d(("image", "label"))({"image": np.zeros((1, 8, 8)), "label": np.zeros((1, 8, 6))}),
        ValueError,
        r"RandFlipRot90d needs keys of one spatial shape.*'label': \(8, 6\)",
    ),
    Case(
        "undo-flip-rot90-record-of-3d-on-2d-map",
        lambda: undo_flip_rot90(torch.zeros(2, 1, 8, 8), np.zeros(6, dtype=np.int64)),
        ValueError,
        r"record\[0\] must be a flip/rot90 record of length spatial_dims \+ 3 = 5.*got shape \(6,\)",
    ),
    Case(
        "undo-flip-rot90-float-record",
        lambda: undo_flip_rot90(torch.zeros(1, 1, 8, 8), np.zeros(5)),
        TypeError,
        r"record\[0\] must hold integers .*got dtype float64",
    ),
    Case(
        "rand-slice-of-2d-image",
        lambda: RandSlice()(np.zeros((1, 8, 8))),
        ValueError,
        r"img must be a channel-first 3D volume \(C, H, W, D\), got shape \(1, 8, 8\)",
    ),
    Case(
        "rand-sliced-volumes-with-different-slice-counts",
        lambda: RandSliced(("image", "label"))({"image": np.zeros((1, 4, 4, 6)), "label": np.zeros((1, 4, 4, 5))}),
        ValueError,
        r"same number of slices along axis 2, got \{'image': 6, 'label': 5\}",
    ),
    Case(
        "slice-partition-more-partitions-than-slices",
        lambda: SlicePartition(4)(slice_index=1, num_slices=3),
        ValueError,
        r"num_partitions \(4\) must not exceed num_slices \(3\)",
    ),
    Case(
        "slice-partition-float-index",
        lambda: SlicePartition(2)(slice_index=1.5, num_slices=4),
        TypeError,
        r"slice_index must be an integer, got float 1.5",
    ),
    Case(
        "slice-partitiond-missing-slice-entries",
        lambda: SlicePartitiond(2)({"image": np.zeros((1, 4, 4))}),
        ValueError,
        r"SlicePartitiond: the sample lacks \['slice_index', 'num_slices'\].*apply RandSliced first",
    ),
    Case(
        "pseudo-classd-key-not-in-table",
        lambda: PseudoClassd(_table())({"key": "images/zzz.png"}),
        ValueError,
        r"key 'images/zzz.png' is not in the pseudo-class table .*another dataset",
    ),
    Case(
        "pseudo-classd-sample-without-key-field",
        lambda: PseudoClassd(_table())({"image": "images/a.png"}),
        ValueError,
        r"PseudoClassd: the sample has no key_field 'key' .*it has \['image'\]",
    ),
    Case(
        "pseudo-class-key-not-a-string",
        lambda: PseudoClass(_table())(3),
        TypeError,
        r"key must be a str .*got int",
    ),
    Case(
        "pseudo-class-table-of-wrong-type",
        lambda: PseudoClass({"images/a.png": [0, 1]}),
        TypeError,
        r"table must be a PseudoClassTable or a path .*got dict",
    ),
]

LOSS_CASES = [
    Case(
        "cluster-nt-xent-nan-features",
        lambda: ClusterGuidedContrastiveLoss()(_z(fill=NAN), _z()),
        ValueError,
        r"z1 must be finite, but 32 of 32 values are NaN or Inf",
    ),
    Case(
        "cluster-nt-xent-inf-features",
        lambda: ClusterGuidedContrastiveLoss()(_z(), _z(fill=INF)),
        ValueError,
        r"z2 must be finite, but .* NaN or Inf",
    ),
    Case(
        "cluster-nt-xent-shape-mismatch",
        lambda: ClusterGuidedContrastiveLoss()(_z(4, 8), _z(4, 9)),
        ValueError,
        r"z1 and z2 must have the same \(B, F\) shape, got \(4, 8\) and \(4, 9\)",
    ),
    Case(
        "cluster-nt-xent-integer-features",
        lambda: ClusterGuidedContrastiveLoss()(_z().long(), _z().long()),
        TypeError,
        r"z1 must be a floating-point tensor, got dtype torch.int64",
    ),
    Case(
        "cluster-nt-xent-dense-map-instead-of-embeddings",
        lambda: ClusterGuidedContrastiveLoss()(_map(2, 4, 8, 8), _map(2, 4, 8, 8)),
        ValueError,
        r"z1 must have 2 dimensions, got shape \(2, 4, 8, 8\)",
    ),
    Case(
        "cluster-nt-xent-float-pseudo-classes",
        lambda: ClusterGuidedContrastiveLoss()(_z(), _z(), torch.zeros(4)),
        TypeError,
        r"pseudo_classes must be an integer tensor, got dtype torch.float32",
    ),
    Case(
        "cluster-nt-xent-pseudo-classes-of-another-batch",
        lambda: ClusterGuidedContrastiveLoss()(_z(), _z(), torch.zeros(5, dtype=torch.long)),
        ValueError,
        r"pseudo_classes must have length B=4 in dim 0, got shape \(5,\)",
    ),
    Case(
        "cluster-nt-xent-level-out-of-range",
        lambda: ClusterGuidedContrastiveLoss(level=3)(_z(), _z(), torch.zeros(4, 2, dtype=torch.long)),
        ValueError,
        r"level must lie in \[-2, 1\] for pseudo_classes with 2 level\(s\), got 3",
    ),
    Case(
        "global-partitions-of-another-batch",
        lambda: GlobalContrastiveLoss()(_z(), _z(), torch.zeros(3, dtype=torch.long)),
        ValueError,
        r"partitions must have length B=4 in dim 0, got shape \(3,\)",
    ),
    Case(
        "local-nan-feature-map",
        lambda: LocalContrastiveLoss()(_map(2, 4, 8, 8, fill=NAN), _map(2, 4, 8, 8)),
        ValueError,
        r"f1 must be finite, but 512 of 512 values are NaN or Inf",
    ),
    Case(
        "local-unbatched-map",
        lambda: LocalContrastiveLoss()(_map(4, 8, 8), _map(4, 8, 8)),
        ValueError,
        r"f1 must be \(B, C, H, W\) or \(B, C, H, W, D\), got shape \(4, 8, 8\)",
    ),
    Case(
        "local-maps-of-different-sizes",
        lambda: LocalContrastiveLoss()(_map(2, 4, 8, 8), _map(2, 4, 8, 7)),
        ValueError,
        r"f1 and f2 must have the same \(B, C, \*spatial\) shape, got \(2, 4, 8, 8\) and \(2, 4, 8, 7\)",
    ),
    Case(
        "local-region-larger-than-map",
        lambda: LocalContrastiveLoss(region_size=16)(_map(2, 4, 8, 8), _map(2, 4, 8, 8)),
        ValueError,
        r"region_size=16 must not exceed the spatial size of f1, got shape \(2, 4, 8, 8\)",
    ),
    Case(
        "patch-discrimination-views-of-different-sizes",
        lambda: PatchDiscriminationLoss()(_map(2, 4, 16, 16), _map(2, 4, 16, 8)),
        ValueError,
        r"embedding and embedding_1 must have the same \(B, D, \*spatial\) shape",
    ),
    Case(
        "region-discrimination-assignment-of-another-size",
        lambda: RegionDiscriminationLoss()(_map(2, 4, 8, 8), torch.softmax(_map(2, 3, 8, 7), 1)),
        ValueError,
        r"embedding \(N, D, \*spatial\) and assignment \(N, K, \*spatial\) must share N and the spatial size",
    ),
    Case(
        "dec-negative-target-distribution",
        lambda: DECClusteringLoss()(torch.rand(4, 3), -torch.rand(4, 3)),
        ValueError,
        r"target must be a non-negative distribution",
    ),
    Case(
        "dec-logits-instead-of-assignments",
        lambda: DECClusteringLoss()(torch.tensor([[2.0, -1.0], [0.5, 0.3]]), torch.tensor([[0.9, 0.1], [0.6, 0.4]])),
        ValueError,
        r"q must hold soft assignments: non-negative rows that sum to 1 .*not logits\), got values in \[-1, 2\]",
    ),
    Case(
        "dec-nan-assignment",
        lambda: DECClusteringLoss()(torch.full((4, 3), NAN), torch.rand(4, 3)),
        ValueError,
        r"q must be finite, but 12 of 12 values are NaN or Inf",
    ),
    Case(
        "elbo-nan-image",
        lambda: ELBOLoss()(_map(2, 1, 8, 8), _map(2, 1, 8, 8, fill=NAN), torch.zeros(2, 4), torch.zeros(2, 4)),
        ValueError,
        r"target must be finite, but 128 of 128 values are NaN or Inf",
    ),
    Case(
        "elbo-reconstruction-of-another-size",
        lambda: ELBOLoss()(_map(2, 1, 8, 8), _map(2, 1, 8, 7), torch.zeros(2, 4), torch.zeros(2, 4)),
        ValueError,
        r"reconstruction and target must have the same shape, got \(2, 1, 8, 8\) and \(2, 1, 8, 7\)",
    ),
    Case(
        "pretrain-loss-output-without-global",
        lambda: ContrastivePretrainLoss(ClusterGuidedContrastiveLoss())({"dense": _map(4, 2, 8, 8)}),
        ValueError,
        r"preds must hold the key 'global' \(network output dict\), got keys \['dense'\]",
    ),
    Case(
        "pretrain-loss-rows-not-a-multiple-of-views",
        lambda: ContrastivePretrainLoss(ClusterGuidedContrastiveLoss())({"global": _z(5, 8)}),
        ValueError,
        r"preds\['global'\] must have V\*B rows in dim 0 with num_views V=2, got shape \(5, 8\)",
    ),
]

TEMPERATURE_CASES = [
    Case(
        f"{cls.__name__}-temperature-{t}",
        (lambda cls=cls, t=t: cls(temperature=t)),
        ValueError,
        rf"temperature must be a finite number > 0, got {t}",
    )
    for cls in (ClusterGuidedContrastiveLoss, GlobalContrastiveLoss, LocalContrastiveLoss, PatchDiscriminationLoss)
    for t in (0.0, -0.1)
] + [
    Case(
        "ClusterGuidedContrastiveLoss-temperature-nan",
        lambda: ClusterGuidedContrastiveLoss(temperature=NAN),
        ValueError,
        r"temperature must be a finite number > 0, got nan",
    ),
    Case(
        "ClusterGuidedContrastiveLoss-temperature-str",
        lambda: ClusterGuidedContrastiveLoss(temperature="0.1"),
        TypeError,
        r"temperature must be a real number, got str '0.1'",
    ),
]

NETWORK_CASES = [
    Case(
        "pretrain-net-rgb-into-grey-network",
        lambda: _pretrain_net()(torch.zeros(1, 3, 32, 32)),
        ValueError,
        r"x must have 1 channel\(s\) in dim 1, got shape \(1, 3, 32, 32\)",
    ),
    Case(
        "pretrain-net-volume-into-2d-network",
        lambda: _pretrain_net()(torch.zeros(1, 1, 16, 16, 16)),
        ValueError,
        r"x must be \(B, C, H, W\) for spatial_dims=2, got shape \(1, 1, 16, 16, 16\)",
    ),
    Case(
        "pretrain-net-size-not-divisible",
        lambda: _pretrain_net()(torch.zeros(1, 1, 30, 30)),
        ValueError,
        r"x spatial size \(30, 30\) must be divisible by \(16, 16\)",
    ),
    Case(
        "pretrain-net-spatial-dims-4",
        lambda: ContrastivePretrainNet(4, 1),
        ValueError,
        r"spatial_dims must be 2 or 3, got 4",
    ),
    Case(
        "autoencoder-wrong-in-channels",
        lambda: FeatureAutoEncoder(2, 1, channels=(4, 8), strides=(2, 2))(torch.zeros(1, 3, 16, 16)),
        ValueError,
        r"x must have 1 channel\(s\) in dim 1, got shape \(1, 3, 16, 16\)",
    ),
    Case(
        "local-discrimination-net-wrong-in-channels",
        lambda: LocalDiscriminationNet(2, 1, embed_dim=4, num_clusters=3, features=_SMALL_UNET)(
            torch.zeros(1, 3, 16, 16)
        ),
        ValueError,
        r"x must have 1 channel\(s\) in dim 1, got shape \(1, 3, 16, 16\)",
    ),
    Case(
        "contrastive-autoencoder-wrong-image-size",
        lambda: ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4, 8), strides=(2, 2), proj_dim=4)(
            torch.zeros(1, 1, 32, 32)
        ),
        ValueError,
        r"x must have spatial size in_shape=\(16, 16\), got shape \(1, 1, 32, 32\)",
    ),
]

CLUSTERING_CASES = [
    Case(
        "kmeans-fewer-samples-than-clusters",
        lambda: kmeans(np.random.rand(3, 4).astype(np.float32), 5),
        ValueError,
        r"kmeans needs at least as many samples as clusters: got 3 sample\(s\) for num_clusters=5",
    ),
    Case(
        "kmeans-nan-features",
        lambda: kmeans(_with_nan_row(), 2),
        ValueError,
        r"features must be finite, but 1 row\(s\) hold NaN or Inf \(first: row 2\)",
    ),
    Case(
        "hierarchy-fewer-samples-than-finest-level",
        lambda: hierarchical_pseudo_classes(np.random.rand(3, 4), (2, 4)),
        ValueError,
        r"num_clusters asks for 4 clusters at its finest level, but features hold 3 samples",
    ),
    Case(
        "hierarchy-collapsed-features",
        lambda: hierarchical_pseudo_classes(np.ones((10, 4)), (2, 4)),
        ValueError,
        r"features hold only 1 distinct points \(of 10 samples\); lower num_clusters or check the feature extractor",
    ),
    Case(
        "hierarchy-inf-features",
        lambda: hierarchical_pseudo_classes(np.where(np.eye(10, 4) > 0, np.inf, 1.0), (2, 4)),
        ValueError,
        r"features must be finite, but 4 row\(s\) hold NaN or Inf \(first: row 0\)",
    ),
    Case(
        "hierarchy-levels-not-increasing",
        lambda: hierarchical_pseudo_classes(np.random.rand(10, 4), (4, 2)),
        ValueError,
        r"num_clusters must be strictly increasing \(coarse to fine\), got \(4, 2\)",
    ),
    Case(
        "hierarchy-integer-features",
        lambda: hierarchical_pseudo_classes(np.ones((10, 4), dtype=int), (2, 4)),
        TypeError,
        r"features must be a floating-point \(N, F\) array, got dtype int64",
    ),
    Case(
        "table-keys-do-not-match-feature-rows",
        lambda: compute_pseudo_class_table(np.random.rand(10, 4), ["images/a.png"] * 3, (2, 4), "m"),
        ValueError,
        r"keys must have one entry per row of features: got 3 keys for 10 rows",
    ),
    Case(
        "table-from-another-dataset",
        lambda: _table().check_keys(["images/a.png", "other/x.png", "other/y.png"]),
        ValueError,
        r"lacks 2 of the 3 dataset keys, e.g. \['other/x.png', 'other/y.png'\]; was it computed on another dataset",
    ),
    Case(
        "table-label-outside-num-clusters",
        lambda: PseudoClassTable(["a", "b"], np.array([[0, 0], [2, 5]]), (2, 4), "m"),
        ValueError,
        r"row 1: level_0 value 2 is outside \[0, 2\) \(num_clusters=2\)",
    ),
    Case(
        "table-levels-not-nested",
        lambda: PseudoClassTable(["a", "b"], np.array([[0, 1], [1, 1]]), (2, 4), "m"),
        ValueError,
        r"row 1: rows are not nested: level_1 cluster 1 lies in level_0 cluster 1 here but in 0 at row 0",
    ),
    Case(
        "features-of-a-bad-image",
        _extract_with_bad_image,
        ValueError,
        r"features of 1 image\(s\) hold NaN or Inf: \['images/2.png'\]; check those images and the model",
    ),
]

HANDLER_CASES = [
    Case(
        "non-finite-loss-output-without-loss",
        lambda: _engine_with_output({"pred": torch.zeros(1)}).run([0], max_epochs=1),
        ValueError,
        r"the iteration output has no 'loss' entry \(it has \['pred'\]\); pass output_transform",
    ),
    Case(
        "non-finite-loss-nan",
        lambda: _engine_with_output({"loss": torch.tensor(NAN)}).run([0, 1], max_epochs=1),
        FloatingPointError,
        r"non-finite loss nan at epoch 1, iteration 1; training stopped before any checkpoint",
    ),
]

ALL_CASES = TRANSFORM_CASES + LOSS_CASES + TEMPERATURE_CASES + NETWORK_CASES + CLUSTERING_CASES + HANDLER_CASES


def test_catalogue_is_large_and_ids_are_unique():
    ids = [case.id for case in ALL_CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_bad_input_raises_clear_error(case: Case):
    with pytest.raises(case.error, match=case.match):
        case.call()
