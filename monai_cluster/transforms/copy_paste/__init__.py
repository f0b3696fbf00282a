"""Bidirectional copy-paste (BCP) of one random box between a labelled and an unlabelled batch."""

from .array import RandCopyPaste, box_mask, check_box_fraction, copy_paste
from .dictionary import RandCopyPasted, RandCopyPasteD, RandCopyPasteDict

__all__ = [
    "RandCopyPaste",
    "RandCopyPasteD",
    "RandCopyPasteDict",
    "RandCopyPasted",
    "box_mask",
    "check_box_fraction",
    "copy_paste",
]
