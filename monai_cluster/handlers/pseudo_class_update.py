"""Re-cluster the training images during pretraining and swap the pseudo-class table in place."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from torch import nn

from monai_cluster.clustering import (
    PseudoClassTable,
    cluster_accuracy,
    compute_pseudo_class_table,
    extract_features,
    write_pseudo_class_table,
)
from monai_cluster.clustering._checks import check_num_clusters
from monai_cluster.transforms.pseudo_class import PseudoClassd
from monai_cluster.utils import check_positive_int

__all__ = ["PseudoClassUpdateHandler", "count_changed"]

logger = logging.getLogger(__name__)


def count_changed(previous: PseudoClassTable | None, new: PseudoClassTable) -> list[int]:
    """Per level, how many of ``new``'s samples changed pseudo-class since ``previous``, ignoring renumbering.

    Cluster ids of two clustering runs are arbitrary, so at each level the new clusters are matched one-to-one
    to the previous ones that overlap them most (Hungarian matching, as in
    :func:`~monai_cluster.clustering.cluster_accuracy`); a sample outside its matched cluster counts as changed,
    and so does every key absent from ``previous``. Without a previous table (or with a different number of
    levels) every sample counts as changed.

    Returns:
        ``L`` counts, coarse to fine, each in ``[0, len(new)]``.
    """
    n = len(new)
    if previous is None or previous.num_levels != new.num_levels:
        return [n] * new.num_levels
    known = set(previous.keys)
    rows = [i for i, key in enumerate(new.keys) if key in known]
    if not rows:
        return [n] * new.num_levels
    old = np.stack([previous.lookup(new.keys[i]) for i in rows])
    counts = []
    for level in range(new.num_levels):
        matched = cluster_accuracy(old[:, level], new.labels[rows, level]) * len(rows)
        counts.append(int(round(len(rows) - matched)) + n - len(rows))
    return counts


class PseudoClassUpdateHandler:
    """Every ``interval`` epochs (or iterations), recompute the pseudo-classes from the current features.

    Each update puts ``feature_network`` in eval mode, extracts features of ``data`` without gradients
    (:func:`~monai_cluster.clustering.extract_features`), restores the network's mode, clusters the features
    hierarchically (:func:`~monai_cluster.clustering.compute_pseudo_class_table`), writes the table atomically to
    ``table_path``, swaps it into every given :class:`~monai_cluster.transforms.PseudoClassd` (``set_table``), and
    logs how many samples changed pseudo-class at each level (:func:`count_changed`: clusters matched per level,
    so a renumbering is no change; all samples when there was no previous table). The finest level's count goes
    to ``engine.state.metrics["pseudo_class_changed"]`` (so MONAI's ``StatsHandler`` logs it); ``last_changed``
    holds all levels. The previous table is the first transform's table until the first update.

    DataLoader workers see the new table at the next epoch only with ``persistent_workers=False``; see
    :class:`~monai_cluster.transforms.PseudoClassd`.

    Args:
        interval: update every ``interval`` epochs (iterations when ``epoch_level=False``); 0 turns the handler off.
        feature_network: the network whose features are clustered (e.g. the ``ContrastivePretrainNet`` being
            trained, whose ``forward_features`` gives the pooled bottleneck).
        data: the training images, as :func:`~monai_cluster.clustering.extract_features` takes them (each item
            has ``image_key`` and ``key_field``; use deterministic transforms).
        num_clusters: clusters per level, coarse to fine.
        table_path: where the table is written (atomically).
        transforms: the ``PseudoClassd`` transform(s) whose table is swapped.
        feature_fn: ``extract_features``'s ``feature_fn`` (``None``: its default).
        feature_model_name: text for the table header; ``None`` uses the network's class name and the epoch.
        method: ``hierarchical_pseudo_classes``'s method.
        seed: clustering seed.
        epoch_level: count ``interval`` in epochs (``True``) or iterations.
        image_key: image entry of the items of ``data``.
        key_field: key entry of the items of ``data``.
        batch_size: feature-extraction batch size.
        progress: show a progress bar while extracting features.
        feature_transform: per-sample transform when ``data`` is a list of dicts (e.g. loading and intensity
            scaling, without random augmentation).

    Raises:
        ValueError/TypeError: for a negative ``interval``, bad ``num_clusters``, transforms that are not
            ``PseudoClassd``, or (when ``interval > 0``) a missing network, data or table path.

    References:
        - [0] Zhang et al., cluster-guided contrastive learning, 2022, https://arxiv.org/abs/2211.08557
    """

    def __init__(
        self,
        interval: int = 0,
        feature_network: nn.Module | None = None,
        data: Any = None,
        num_clusters: Sequence[int] = (8, 64),
        table_path: str | os.PathLike | None = None,
        transforms: PseudoClassd | Sequence[PseudoClassd] = (),
        feature_fn: Callable | None = None,
        feature_model_name: str | None = None,
        method: str = "auto",
        seed: int = 0,
        epoch_level: bool = True,
        image_key: str = "image",
        key_field: str = "key",
        batch_size: int = 16,
        progress: bool = False,
        feature_transform: Callable | None = None,
    ) -> None:
        self.interval = check_positive_int(interval, "interval", minimum=0)
        self.num_clusters = check_num_clusters(num_clusters)
        if isinstance(transforms, PseudoClassd):
            transforms = (transforms,)
        bad = [type(t).__name__ for t in transforms if not isinstance(t, PseudoClassd)]
        if bad:
            raise TypeError(f"transforms must be PseudoClassd transforms, got {bad}.")
        self.transforms = tuple(transforms)
        if self.interval > 0:
            if not isinstance(feature_network, nn.Module):
                raise TypeError(f"feature_network must be a torch.nn.Module, got {type(feature_network).__name__}.")
            if data is None:
                raise ValueError("data must be given (the training images to cluster) when interval > 0.")
            if table_path is None:
                raise ValueError(
                    "table_path must be given (where the pseudo-class table is written) when interval > 0."
                )
        if feature_fn is not None and not callable(feature_fn):
            raise TypeError(f"feature_fn must be callable or None, got {type(feature_fn).__name__}.")
        self.feature_network = feature_network
        self.data = data
        self.table_path = table_path
        self.feature_fn = feature_fn
        self.feature_model_name = feature_model_name
        self.method = method
        self.seed = seed
        self.epoch_level = bool(epoch_level)
        self.image_key = image_key
        self.key_field = key_field
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.progress = progress
        self.feature_transform = feature_transform
        self.table: PseudoClassTable | None = self.transforms[0].table if self.transforms else None
        self.last_changed: list[int] | None = None

    def attach(self, engine: Engine) -> None:
        """Run :meth:`update` every ``interval`` epochs (or iterations); does nothing when ``interval == 0``."""
        if self.interval == 0:
            return
        event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
        engine.add_event_handler(event(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        self.update(engine)

    def update(self, engine: Engine | None = None) -> PseudoClassTable:
        """Re-cluster now and return the new table (also usable without an engine, e.g. for the first table).

        Raises:
            ValueError: when ``feature_network``, ``data`` or ``table_path`` was not given.
        """
        if self.feature_network is None or self.data is None or self.table_path is None:
            raise ValueError("update needs feature_network, data and table_path, which were not all given.")
        epoch = None if engine is None else engine.state.epoch
        # extract_features runs the network in eval mode without gradients and restores its mode afterwards
        features, keys = extract_features(
            self.feature_network,
            self.data,
            image_key=self.image_key,
            key_field=self.key_field,
            batch_size=self.batch_size,
            feature_fn=self.feature_fn,
            progress=self.progress,
            transform=self.feature_transform,
        )
        name = self.feature_model_name
        if name is None:
            name = type(self.feature_network).__name__ + ("" if epoch is None else f" at epoch {epoch}")
        table = compute_pseudo_class_table(features, keys, self.num_clusters, name, method=self.method, seed=self.seed)
        changed = count_changed(self.table, table)
        write_pseudo_class_table(table, self.table_path)
        for transform in self.transforms:
            transform.set_table(table)
        self.table = table
        self.last_changed = changed
        if engine is not None:
            engine.state.metrics["pseudo_class_changed"] = changed[-1]
        logger.info(
            "pseudo-classes recomputed%s: %s of %d samples changed class (per level, coarse to fine); "
            "table written to %s",
            "" if epoch is None else f" at epoch {epoch}",
            changed,
            len(table),
            self.table_path,
        )
        return table
