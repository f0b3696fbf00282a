"""Dictionary version of the bidirectional copy-paste mix: pairs of keys mixed both ways with one box mask."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import ensure_tuple

from monai_cluster.transforms.copy_paste.array import RandCopyPaste, copy_paste

__all__ = ["RandCopyPasted", "RandCopyPasteD", "RandCopyPasteDict"]


class RandCopyPasted(Randomizable, MapTransform):
    """Dictionary version of :class:`~monai_cluster.transforms.RandCopyPaste`.

    ``keys`` and ``partner_keys`` pair up entries of one dictionary (a sample, or a collated batch), e.g. the
    labelled ``("image", "label")`` with the unlabelled ``("unlabeled_image", "pseudo_label")``. One box mask ``M``
    is drawn per call from ``self.R`` and every pair is mixed with it both ways: ``f"{key}{suffix}"`` is
    ``d[key] * M + d[partner] * (1 - M)`` (the key's own content inside the box, its partner's outside) and
    ``f"{partner}{suffix}"`` is ``d[partner] * M + d[key] * (1 - M)``. Images and labels mixed in one call therefore
    share the mask. The mask (``float32`` ``(*spatial)``) is written to ``mask_key`` when it is not ``None``.
    The inputs are left as they are.

    Args:
        keys: keys of the first members of the pairs.
        partner_keys: keys of the second members, one per key, in the same order.
        spatial_dims: 2 or 3.
        fraction: box side as a fraction of each spatial side, in ``(0, 1]`` (one or one per axis).
        suffix: appended to a key's name for its mix; must not be empty.
        mask_key: where the mask goes, or ``None``.
        allow_missing_keys: skip pairs of which a member is missing instead of raising.

    Raises:
        ValueError: for an unequal number of keys and partner keys, an empty suffix, a missing key (unless allowed)
            or entries of different spatial shapes.
    """

    def __init__(
        self,
        keys: KeysCollection,
        partner_keys: KeysCollection,
        spatial_dims: int,
        fraction: float | Sequence[float] = 2.0 / 3.0,
        suffix: str = "_mixed",
        mask_key: str | None = "copy_paste_mask",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.partner_keys = ensure_tuple(partner_keys)
        if len(self.partner_keys) != len(self.keys):
            raise ValueError(
                f"partner_keys must hold one key per key ({len(self.keys)}: {list(self.keys)}), "
                f"got {list(self.partner_keys)}."
            )
        if not isinstance(suffix, str) or not suffix:
            raise ValueError(f"suffix must be a non-empty string, got {suffix!r}.")
        if mask_key is not None and not isinstance(mask_key, str):
            raise TypeError(f"mask_key must be a string or None, got {type(mask_key).__name__}.")
        self.suffix = suffix
        self.mask_key = mask_key
        self.mixer = RandCopyPaste(spatial_dims, fraction)
        self.mixer.R = self.R  # one random state: draws come from self.R

    def set_random_state(self, seed: int | None = None, state: Any = None) -> RandCopyPasted:
        super().set_random_state(seed, state)
        self.mixer.R = self.R
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw the box for the spatial shape ``data`` (a sequence of sizes)."""
        self.mixer.randomize(data)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with both mixes of every pair (and the mask) added."""
        pairs = []
        for key, partner in zip(self.keys, self.partner_keys):
            missing = [k for k in (key, partner) if k not in data]
            if missing and not self.allow_missing_keys:
                raise ValueError(f"RandCopyPasted: key(s) {missing} are missing (the dictionary has {list(data)}).")
            if not missing:
                pairs.append((key, partner))
        d = dict(data)
        if not pairs:
            return d
        sd = self.mixer.spatial_dims
        shapes = {k: tuple(getattr(d[k], "shape", ()))[-sd:] for pair in pairs for k in pair}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"RandCopyPasted needs entries of one spatial shape, got {shapes}.")
        first = pairs[0][0]
        if len(getattr(d[first], "shape", ())) not in (sd + 1, sd + 2):
            raise ValueError(
                f"data[{first!r}] must be (C, *spatial) or (B, C, *spatial) with {sd} spatial axes, "
                f"got shape {tuple(getattr(d[first], 'shape', ()))}."
            )
        self.randomize(next(iter(shapes.values())))
        for key, partner in pairs:
            d[f"{key}{self.suffix}"], d[f"{partner}{self.suffix}"] = copy_paste(d[key], d[partner], self.mixer.last_mask)
        if self.mask_key is not None:
            d[self.mask_key] = self.mixer.last_mask.copy()
        return d


RandCopyPasteD = RandCopyPasteDict = RandCopyPasted
