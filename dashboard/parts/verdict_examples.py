"""The images behind a verdict as one HTML block: transplants and erasures, each image with
its prediction.

Made on the test's own thread (:mod:`dashboard.state.verdicts`) from
:func:`core.analysis.causal_examples.verdict_examples`, which regenerates the very pixels that
were classified. Each transplant row shows the source with the tested region outlined, the
target before and after the paste with both predictions, the Grad-CAM of the new image for its
new prediction, and the control paste; each erasure row the pattern's image with the region
outlined, the region inpainted and the control inpainting, with their predictions. Images are
inline data URLs (lossless WebP for small inputs), drawn pixelated at a fixed size.
"""

from __future__ import annotations

from html import escape
from pathlib import PurePath
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from core.analysis.panels import panel_url
from core.analysis.transplant import outline

if TYPE_CHECKING:
    from core.analysis.causal import Verdict
    from core.data.datasets import ImageDataset
    from core.data.models import LoadedModel
    from core.results import Results

__all__ = ["EXAMPLES", "examples_html"]

EXAMPLES = 4  # transplants and erasures shown, hits first
REGION = (255, 214, 0)  # the tested region's outline (yellow: marks are often magenta)
CONTROL = (0, 200, 255)  # a control box's outline
_SIZE = "width:112px;height:112px"


def examples_html(
    model: LoadedModel, dataset: ImageDataset, result: Results, verdict: Verdict
) -> str:
    """HTML of up to :data:`EXAMPLES` transplants (flips first) and erasures (recoveries
    first) of ``verdict``, with their predictions (runs the model: call off the page)."""
    from core.analysis.causal_examples import verdict_examples

    found = verdict_examples(model, dataset, result, verdict, count=EXAMPLES)
    names = result.classes
    box = found.box
    pred = verdict.subject.pred
    transplants = []
    for i in range(len(found.after)):
        flipped = int(found.pred_after[i]) == pred
        transplants.append(
            _row(
                [
                    _figure(
                        outline(found.sources[i], box, REGION, _width(found.sources[i])),
                        f"source {_name(found.source_paths[i])}",
                        "region outlined",
                    ),
                    _figure(
                        found.before[i],
                        f"target {_name(found.target_paths[i])}",
                        f"predicted {names[int(found.pred_before[i])]}",
                    ),
                    _figure(
                        found.after[i],
                        "region pasted",
                        f"predicted {names[int(found.pred_after[i])]} "
                        f"({float(found.prob_after[i]):.2f})",
                        hit=flipped,
                    ),
                    _figure(
                        found.after[i],
                        "Grad-CAM of the new image",
                        f"for {names[int(found.pred_after[i])]}",
                        cam=found.after_maps[i],
                    ),
                    _figure(
                        found.control[i],
                        "control paste",
                        f"predicted {names[int(found.pred_control[i])]}",
                        hit=int(found.pred_control[i]) == pred,
                    ),
                ]
            )
        )
    erasures = []
    for i in range(len(found.erased)):
        left = int(found.erased_pred[i]) != pred
        control_box = tuple(int(v) for v in found.erase_control_boxes[i])
        erasures.append(
            _row(
                [
                    _figure(
                        outline(found.originals[i], box, REGION, _width(found.originals[i])),
                        f"{_name(found.erase_paths[i])}",
                        f"predicted {names[pred]}, region outlined",
                    ),
                    _figure(
                        found.erased[i],
                        "region inpainted",
                        f"predicted {names[int(found.erased_pred[i])]} "
                        f"({float(found.erased_prob[i]):.2f})",
                        hit=left,
                    ),
                    _figure(
                        outline(
                            found.erased_control[i],
                            control_box,  # type: ignore[arg-type]
                            CONTROL,
                            _width(found.erased_control[i]),
                        ),
                        "control inpainted (outlined)",
                        f"predicted {names[int(found.erased_control_pred[i])]}",
                        hit=int(found.erased_control_pred[i]) != pred,
                    ),
                ]
            )
        )
    return (
        '<div class="verdict-examples">'
        + _section(
            "Transplants",
            f"the region of a source pasted into a target at the same place; "
            f"flips to {names[pred]} first",
            transplants,
            "verdict-transplants",
        )
        + _section(
            "Erasures",
            f"the region inpainted (OpenCV, Telea) in the pattern's images; those that left "
            f"{names[pred]} first",
            erasures,
            "verdict-erasures",
        )
        + "</div>"
    )


def _width(image: np.ndarray) -> int:
    """An outline about 1/40 of the image wide (1 px at 64 px)."""
    return max(1, round(max(image.shape[:2]) / 64))


def _name(path: str) -> str:
    return PurePath(path).name


def _image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _figure(
    array: np.ndarray, title: str, caption: str, hit: bool = False, cam: np.ndarray | None = None
) -> str:
    url = panel_url(_image(array), cam, 0.5) if cam is not None else panel_url(_image(array))
    mark = "font-weight:600;color:#b91c1c" if hit else ""
    return (
        f'<figure class="verdict-example" style="margin:0;width:112px">'
        f'<img src="{url}" alt="{escape(title)}" style="{_SIZE};image-rendering:pixelated;'
        f'border-radius:.25rem">'
        f'<figcaption style="{_CAPTION}">{escape(title)}<br><span style="{mark}">'
        f"{escape(caption)}</span></figcaption></figure>"
    )


def _row(figures: list[str]) -> str:
    return f'<div style="display:flex;gap:.5rem;margin:.35rem 0">{"".join(figures)}</div>'


def _section(title: str, note: str, rows: list[str], css: str) -> str:
    body = "".join(rows) or f'<p style="{_CAPTION}">none</p>'
    return (
        f'<div class="{css}" style="margin:.5rem 0"><p style="margin:0;font-weight:600">'
        f'{escape(title)}</p><p style="{_CAPTION}">{escape(note)}</p>{body}</div>'
    )


_CAPTION = "font-size:.75rem;color:rgba(49,51,63,.65);margin:.15rem 0;line-height:1.25"
