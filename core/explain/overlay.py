"""Blend a class activation map onto an image with a perceptual plotly colour scale."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import plotly.colors
from PIL import Image

if TYPE_CHECKING:  # maps may be tensors; torch is not needed to draw stored ones
    import torch

__all__ = ["colormap_lut", "overlay"]


@lru_cache(maxsize=32)
def colormap_lut(name: str = "Inferno") -> np.ndarray:
    """A read-only [256, 3] uint8 lookup table sampled from a named plotly colour scale."""
    try:
        scale = plotly.colors.get_colorscale(name)
    except Exception as err:  # plotly raises its own PlotlyError
        raise ValueError(f"unknown plotly colour scale {name!r}") from err
    colours = plotly.colors.sample_colorscale(scale, np.linspace(0, 1, 256).tolist())
    rgb = [plotly.colors.unlabel_rgb(c) for c in colours]  # "rgb(r, g, b)" strings
    lut = np.clip(np.rint(np.asarray(rgb, dtype=np.float64)), 0, 255).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def _as_map(cam_map: np.ndarray | torch.Tensor) -> np.ndarray:
    if not isinstance(cam_map, np.ndarray) and hasattr(cam_map, "detach"):  # a torch tensor
        cam_map = cam_map.detach().float().cpu().numpy()
    arr = np.asarray(cam_map, dtype=np.float32).squeeze()
    if arr.ndim != 2:
        raise ValueError(f"cam_map must be a 2-D map, got shape {np.shape(cam_map)}")
    return np.nan_to_num(arr, nan=0.0).clip(0.0, 1.0)


def overlay(
    image: Image.Image,
    cam_map: np.ndarray | torch.Tensor,
    alpha: float = 0.5,
    colormap: str = "Inferno",
) -> Image.Image:
    """``image`` (L, RGB, RGBA, ...) with ``cam_map`` (values in [0, 1]) blended on top, as RGB.

    The map is resized bilinearly to the original image size and coloured with ``colormap``;
    ``alpha`` is the map's opacity (0 returns the image itself, 1 the coloured map alone).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    base = image.convert("RGB")
    resized = Image.fromarray(_as_map(cam_map)).resize(base.size, Image.Resampling.BILINEAR)
    index = np.rint(np.asarray(resized).clip(0.0, 1.0) * 255).astype(np.intp)
    heat = colormap_lut(colormap)[index].astype(np.float32)
    blended = (1.0 - alpha) * np.asarray(base, dtype=np.float32) + alpha * heat
    return Image.fromarray(np.rint(blended).astype(np.uint8))
