"""The images behind a verdict of the causal test (:mod:`core.analysis.causal`), regenerated.

A stored verdict keeps every target's and source's row, where each control box was cut and
every new prediction; :func:`verdict_examples` reads the images again and repeats the same
pastes and inpaintings, so the pixels are those that were classified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.analysis.causal import Verdict, image_paths
from core.analysis.transplant import Box, classify, erase, paste, pixel_box, read_inputs
from core.data.datasets import ImageDataset
from core.errors import UserFacingError
from core.results import Results

if TYPE_CHECKING:
    from core.data.models import LoadedModel

__all__ = ["Examples", "verdict_examples"]


@dataclass(frozen=True)
class Examples:
    """Images behind a verdict, regenerated from its stored rows (uint8 [n, H, W, C] at the
    input size; ``box`` in pixels, exclusive ends; classes as indices)."""

    box: Box  # x0, y0, x1, y1
    target_paths: list[str]  # transplants: flips first
    source_paths: list[str]  # the source pasted into each target
    sources: np.ndarray  # the sources (outline ``box`` to show the region)
    before: np.ndarray  # the targets as they are
    after: np.ndarray  # the targets with the source's box pasted
    control: np.ndarray  # the targets with the control box pasted
    control_boxes: np.ndarray  # int64 [n, 4] where each control box was cut in its source
    pred_before: np.ndarray  # stored predictions of the targets (their true class)
    pred_after: np.ndarray  # prediction of ``after``
    prob_after: np.ndarray  # its probability
    pred_control: np.ndarray  # prediction of ``control``
    after_maps: np.ndarray  # float32 [n, H, W] Grad-CAM of ``after`` for ``pred_after``, [0, 1]
    erase_paths: list[str]  # erasures: recoveries first
    originals: np.ndarray  # the pattern's images as they are (predicted ``pred``)
    erased: np.ndarray  # with the box inpainted
    erased_pred: np.ndarray  # prediction of ``erased``
    erased_prob: np.ndarray  # its probability
    erased_control: np.ndarray  # the originals with the control box inpainted
    erased_control_pred: np.ndarray  # prediction of ``erased_control``
    erase_control_boxes: np.ndarray  # int64 [m, 4] the inpainted control box of each


def verdict_examples(
    model: LoadedModel, dataset: ImageDataset, result: Results, verdict: Verdict, count: int = 4
) -> Examples:
    """Up to ``count`` transplants (flips first) and erasures (recoveries first) of
    ``verdict``, regenerated exactly (same rows, places and pixels), with new predictions and
    the Grad-CAM (at the stored maps' layer) of each transplanted image."""
    import torch

    from core.explain.cam import grad_cam

    size = model.spec.input_size
    box = pixel_box(verdict.subject.box, size)
    pred = verdict.subject.pred
    t = np.argsort(verdict.transplant_pred != pred, kind="stable")[:count]
    e = np.argsort(verdict.erase_pred == pred, kind="stable")[:count]
    target_paths = image_paths(result, verdict.target_rows[t])
    source_paths = image_paths(result, verdict.target_sources[t])
    erase_paths = image_paths(result, verdict.erase_rows[e])
    before, _, _ = read_inputs(model, dataset, target_paths)
    sources, _, _ = read_inputs(model, dataset, source_paths)
    originals, _, _ = read_inputs(model, dataset, erase_paths)
    if len(before) != len(t) or len(sources) != len(t) or len(originals) != len(e):
        raise UserFacingError("an image behind this verdict can no longer be read")
    after = paste(before, sources, box)
    control = paste(before, sources, box, verdict.control_from[t])
    erased = erase(originals, box)
    erased_control = erase(originals, box, verdict.erase_control_at[e])
    new_pred, new_prob = classify(model, np.concatenate([after, control, erased, erased_control]))
    n, m = len(t), len(e)
    layer = result.meta.get("map_layer") or None
    x = model.normalize(torch.from_numpy(after).permute(0, 3, 1, 2)).to(model.device)
    maps = grad_cam(model.module, x, torch.from_numpy(new_pred[:n]), layer=layer) if n else x[:, 0]
    size_wh = np.array([box[2] - box[0], box[3] - box[1]])
    corners, spots = verdict.control_from[t], verdict.erase_control_at[e]
    return Examples(
        box=box,
        target_paths=target_paths,
        source_paths=source_paths,
        sources=sources,
        before=before,
        after=after,
        control=control,
        control_boxes=np.concatenate([corners, corners + size_wh], 1).astype(np.int64),
        pred_before=result.pred[np.searchsorted(result.index, verdict.target_rows[t])],
        pred_after=new_pred[:n],
        prob_after=new_prob[:n],
        pred_control=new_pred[n : 2 * n],
        after_maps=maps.detach().cpu().numpy().astype(np.float32),
        erase_paths=erase_paths,
        originals=originals,
        erased=erased,
        erased_pred=new_pred[2 * n : 2 * n + m],
        erased_prob=new_prob[2 * n : 2 * n + m],
        erased_control=erased_control,
        erased_control_pred=new_pred[2 * n + m :],
        erase_control_boxes=np.concatenate([spots, spots + size_wh], 1).astype(np.int64),
    )
