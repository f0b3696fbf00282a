"""Reading and writing the image files that listings point at: 2D (PIL) and 3D (NIfTI, NRRD, MHA).

Reading always decodes the whole file, so a truncated PNG/JPEG or a corrupt ``.nii.gz`` fails here, with
the file named, rather than halfway through training. Writing is atomic (``monai_cluster.utils.io``).
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_cluster.utils.io import atomic_write_bytes

__all__ = [
    "IMAGE_EXTENSIONS",
    "INTENSITY_MODES",
    "LoadedImage",
    "split_extension",
    "read_image",
    "read_intensity_image",
    "write_png",
    "write_nifti",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".gif",
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".mha",
)
"""File extensions that listings recognise as images or masks (matched case-insensitively)."""

_PIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
_NIFTI_EXTENSIONS = (".nii", ".nii.gz")
_ITK_EXTENSIONS = (".nrrd", ".mha")


def split_extension(path: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> tuple[str, str]:
    """Split a file name into ``(stem, extension)``, honouring compound extensions such as ``.nii.gz``.

    Args:
        path: a file path or name.
        extensions: recognised extensions, matched case-insensitively; the longest match wins.

    Returns:
        ``(stem, extension)`` with the extension as written in the name, or ``(name, "")`` when none matches.
    """
    name = Path(path).name
    lower = name.lower()
    for ext in sorted(extensions, key=len, reverse=True):
        if lower.endswith(ext.lower()) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext) :]
    return name, ""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image file.

    Attributes:
        array: the data, spatial axes first and channels last: ``(H, W)``, ``(H, W, C)``, ``(X, Y, Z)`` or
            ``(X, Y, Z, C)`` (NIfTI/ITK axis order, as MONAI's ``LoadImage`` reads it).
        spatial_shape: the spatial size, without channels.
        channels: number of channels (1 for grey images and single-channel volumes).
        mode: the PIL mode of a 2D file (``"L"``, ``"LA"``, ``"RGB"``, ``"RGBA"``, ``"P"``, ``"I;16"``, ...),
            ``""`` for volumes.
    """

    array: np.ndarray
    spatial_shape: tuple[int, ...]
    channels: int
    mode: str = ""

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return len(self.spatial_shape)


def _read_pil(path: Path) -> LoadedImage:
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decodes every byte: truncated files raise here
        bands = len(img.getbands())
        arr = np.asarray(img)
        mode = img.mode
    if arr.ndim == 2:
        return LoadedImage(arr, tuple(arr.shape), 1, mode)
    return LoadedImage(arr, tuple(arr.shape[:2]), bands, mode)


INTENSITY_MODES: dict[str, str] = {
    "1": "L",
    "L": "L",
    "LA": "L",
    "La": "L",
    "P": "RGB",
    "PA": "RGB",
    "RGB": "RGB",
    "RGBA": "RGB",
    "RGBa": "RGB",
    "RGBX": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
}
"""How :func:`read_intensity_image` converts each PIL mode: to grey ``L`` or ``RGB`` (alpha dropped, palette indices
replaced by their colours); the 16/32-bit grey modes (``I;16``, ``I;16B``, ``I``, ``F``) are kept as they are."""


def _read_pil_intensities(path: Path) -> LoadedImage:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        mode = img.mode
        if mode in ("P", "PA") and _grey_palette(img):
            target = "L"
        else:
            target = INTENSITY_MODES.get(mode)
        if target is None and not (mode.startswith("I") or mode == "F"):
            raise ValueError(
                f"{path}: PIL mode {mode!r} is not an image mode this reader understands; expected one of "
                f"{sorted(INTENSITY_MODES)} or a 16/32-bit grey mode (I;16, I, F)."
            )
        arr = np.asarray(img if target is None or target == mode else img.convert(target))
    if arr.ndim == 2:
        return LoadedImage(arr, tuple(arr.shape), 1, mode)
    return LoadedImage(arr, tuple(arr.shape[:2]), int(arr.shape[2]), mode)


def _grey_palette(img) -> bool:
    """True for a palette image whose pixels are all grey (R = G = B), which converts to ``L`` losslessly."""
    palette = np.asarray(img.convert("RGB")).reshape(-1, 3)
    return bool((palette[:, 0] == palette[:, 1]).all() and (palette[:, 1] == palette[:, 2]).all())


def _read_nifti(path: Path) -> LoadedImage:
    import nibabel as nib

    img = nib.load(str(path))
    arr = np.asanyarray(img.dataobj)  # reads and decompresses the whole volume
    if arr.ndim == 2:
        return LoadedImage(arr, tuple(arr.shape), 1)
    if arr.ndim == 3:
        return LoadedImage(arr, tuple(arr.shape), 1)
    if arr.ndim == 4:
        return LoadedImage(arr, tuple(arr.shape[:3]), int(arr.shape[3]))
    if arr.ndim == 5 and arr.shape[3] == 1:  # NIfTI stores vector data as (X, Y, Z, 1, C)
        return LoadedImage(arr[:, :, :, 0], tuple(arr.shape[:3]), int(arr.shape[4]))
    raise ValueError(f"{path}: expected a 2D, 3D or 4D (X, Y, Z, C) NIfTI volume, got shape {arr.shape}.")


def _read_itk(path: Path) -> LoadedImage:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)  # (Z, Y, X[, C]): reverse the spatial axes to (X, Y, Z[, C])
    channels = int(img.GetNumberOfComponentsPerPixel())
    spatial = int(img.GetDimension())
    axes = tuple(reversed(range(spatial))) + tuple(range(spatial, arr.ndim))
    arr = np.transpose(arr, axes)
    return LoadedImage(arr, tuple(arr.shape[:spatial]), channels)


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Decode an image or volume completely.

    Args:
        path: a 2D image (PNG, JPEG, TIFF, BMP, GIF), a NIfTI volume (``.nii``, ``.nii.gz``) or an
            ITK volume (``.nrrd``, ``.mha``).

    Returns:
        the decoded :class:`LoadedImage`.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the extension is not supported or the file cannot be decoded (truncated or
            corrupt); the message names the file.
    """
    return _decode(Path(path), _read_pil)


def _decode(path: Path, pil_reader) -> LoadedImage:
    """Read ``path`` with ``pil_reader`` (2D) or the volume readers, every failure a ValueError naming it."""
    from nibabel.filebasedimages import ImageFileError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    _, ext = split_extension(path)
    ext = ext.lower()
    if ext in _PIL_EXTENSIONS:
        reader = pil_reader
    elif ext in _NIFTI_EXTENSIONS:
        reader = _read_nifti
    elif ext in _ITK_EXTENSIONS:
        reader = _read_itk
    else:
        raise ValueError(f"{path}: unsupported image extension; expected one of {list(IMAGE_EXTENSIONS)}.")
    try:
        return reader(path)
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{path}: cannot decode the file ({type(err).__name__}: {err}).") from err
    except (OSError, EOFError, RuntimeError, SyntaxError, zlib.error, ImageFileError) as err:
        # PIL: OSError "image file is truncated", SyntaxError for broken headers; gzip: EOFError, BadGzipFile,
        # zlib.error; nibabel: ImageFileError for an unreadable header; SimpleITK: RuntimeError.
        raise ValueError(f"{path}: cannot decode the file ({type(err).__name__}: {err}).") from err


def read_intensity_image(path: str | os.PathLike) -> LoadedImage:
    """Decode an image or volume as intensities: what a 2D file's pixels look like, not how they are stored.

    2D files are converted by PIL mode (:data:`INTENSITY_MODES`): ``1``, ``L`` and ``LA`` give one grey channel
    (alpha dropped), ``RGB``, ``RGBA``, ``CMYK``, ``YCbCr``, ... give three (alpha dropped), a palette image
    (``P``, ``PA``) gives its colours (one grey channel when its palette is grey, else RGB) rather than its
    palette indices, and the 16/32-bit grey modes (``I;16``, ``I``, ``F``) one channel of their own values.
    Volumes are read as :func:`read_image` reads them (``(X, Y, Z[, C])``, every channel kept).

    Args:
        path: an image or volume file, as for :func:`read_image`.

    Returns:
        the :class:`LoadedImage` (``mode`` is the file's own PIL mode, ``channels`` 1 or 3 for 2D files).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: as :func:`read_image`, and for a PIL mode without an intensity meaning, naming the file.
    """
    return _decode(Path(path), _read_pil_intensities)


def write_png(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write a ``uint8`` array ``(H, W)`` or ``(H, W, 3)`` as a PNG file, atomically.

    Raises:
        ValueError: when ``array`` is not ``uint8`` of shape ``(H, W)`` or ``(H, W, 3)``.
    """
    from PIL import Image

    array = np.asarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"array must be uint8 (H, W) or (H, W, 3), got {array.dtype} {array.shape}.")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(buffer.getvalue(), path)


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, compresslevel: int = 6) -> None:
    """Write a volume as NIfTI-1 (gzip-compressed when ``path`` ends with ``.nii.gz``), atomically.

    Args:
        array: ``(X, Y, Z)`` volume; its dtype is stored as is.
        affine: ``(4, 4)`` voxel-to-world matrix in millimetres (RAS).
        path: destination ``.nii`` or ``.nii.gz``.
        compresslevel: gzip level for ``.nii.gz``.
    """
    import nibabel as nib

    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be a (4, 4) matrix, got shape {affine.shape}.")
    img = nib.Nifti1Image(np.asarray(array), affine)
    img.header.set_xyzt_units("mm")
    data = img.to_bytes()
    if str(path).lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=compresslevel, mtime=0)
    atomic_write_bytes(data, path)
