"""PNG plots for checking data and models: segmentation overlays, image montages and latent spaces.

Figures are drawn on :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas, never through
``pyplot``, so they need no display, leave the user's matplotlib backend alone and are thread-safe; files
are written atomically. Every function takes 2D images and 3D volumes (a slice of the last axis is shown).
"""

from .display import as_numpy, check_png_path, image_slice, save_figure, to_display_image, to_label_slice
from .latent import embed_2d, plot_latent_space
from .overlay import dice_per_class, label_colour, save_montage, save_overlay

__all__ = [
    "as_numpy",
    "check_png_path",
    "dice_per_class",
    "embed_2d",
    "image_slice",
    "label_colour",
    "plot_latent_space",
    "save_figure",
    "save_montage",
    "save_overlay",
    "to_display_image",
    "to_label_slice",
]
