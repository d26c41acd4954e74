"""The bundled shapes samples behave as documented, seen through Grad-CAM.

``shapes-resnet (shortcut)`` learned the corner mark that every training ``star`` carries: on
test images of other classes that carry the mark and are predicted ``star``, its Grad-CAM for
the predicted class puts most of its mass on the mark; on clean, correctly classified images
the same corner holds little. ``shapes-convnet``'s automatically found target layer gives maps
whose mass lies mostly on the shape's bounding box. ``shapes-vit (shortcut)``, a small timm ViT,
calls every marked shape a star, and its Grad-CAM (on its 8×8 token grid) shows the mark too.

Mass share = sum of the [0, 1] map inside a box / sum over the whole map, at input resolution
(``core.explain.cam.grad_cam`` with its default, automatically found layer). Boxes come from
``sample_models/shapes/test/marks.csv`` (pixels, exclusive ends): the 8×8 mark's box is dilated
by 4 pixels on every side (clipped to the image), the clean images' corner box is the 17×17
bottom-right corner that holds every such dilated box, and shape boxes are dilated by 2 pixels.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from core.config import load_config
from core.data.datasets import open_dataset
from core.data.models import LoadedModel, load_model
from core.explain.cam import candidate_layers, find_target_layer, grad_cam

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "sample_models" / "config.toml"
DATASET = "shapes-test"
MARKED_CLASS = "star"
MARK_DILATION = 4  # pixels added on every side of the mark's 8×8 box, clipped to the image
CORNER_BOX = (47, 47, 64, 64)  # holds every dilated mark box (marks start at x, y in 51..54)
SHAPE_DILATION = 2  # pixels added on every side of the shape's bounding box
# the ViT sample (measured: 80/80 fooled, 0.61 of the map on the mark, 0.05 in a clean corner)
VIT_FOOLED, VIT_ON_MARK, VIT_CLEAN_CORNER = 0.9, 0.45, 0.15


@dataclass(frozen=True)
class Run:
    """A model with its predictions and the manifest rows of every test image, in order."""

    model: LoadedModel
    images: torch.Tensor
    labels: torch.Tensor
    pred: torch.Tensor
    marked: torch.Tensor
    mark_boxes: torch.Tensor  # [N, 4] x0, y0, x1, y1 (-1 when unmarked)
    shape_boxes: torch.Tensor  # [N, 4]
    classes: list[str]


def _box(row: dict[str, str], prefix: str) -> list[int]:
    values = [row[f"{prefix}{k}"] for k in ("x0", "y0", "x1", "y1")]
    return [int(v) if v != "" else -1 for v in values]


def _run(model_name: str) -> Run:
    config = load_config(CONFIG)
    model = load_model(config.model(model_name))
    dataset = open_dataset(config.dataset(DATASET), model.spec.classes)
    with (dataset.root / "marks.csv").open(newline="", encoding="utf-8") as handle:
        manifest = {row["path"]: row for row in csv.DictReader(handle)}
    data = dataset.with_transform(model.transform, model.spec.channels)
    samples = [data[i] for i in range(len(data))]
    assert all(s.image is not None for s in samples), [s.error for s in samples if s.error]
    rows = [manifest[rel] for rel, _ in dataset.samples]
    assert [dataset.classes[label] for _, label in dataset.samples] == [r["label"] for r in rows]
    images = torch.stack([s.image for s in samples])  # type: ignore[misc]
    with torch.inference_mode():
        pred = model.module(images.to(model.device)).argmax(1).cpu()
    return Run(
        model=model,
        images=images,
        labels=torch.tensor([s.label for s in samples]),
        pred=pred,
        marked=torch.tensor([r["marked"] == "1" for r in rows]),
        mark_boxes=torch.tensor([_box(r, "") for r in rows]),
        shape_boxes=torch.tensor([_box(r, "shape_") for r in rows]),
        classes=list(dataset.classes),
    )


def _dilate(boxes: torch.Tensor, pixels: int, size: int) -> torch.Tensor:
    grown = boxes + torch.tensor([-pixels, -pixels, pixels, pixels])
    return grown.clamp(0, size)


def _mass_share(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Per map: the share of its total mass inside its box (x0, y0, x1, y1)."""
    inside = torch.stack(
        [m[y0:y1, x0:x1].sum() for m, (x0, y0, x1, y1) in zip(maps, boxes.tolist(), strict=True)]
    )
    return inside / maps.sum((1, 2)).clamp_min(1e-12)


def _area_share(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """What a uniform map would put inside each box."""
    return ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).float() / size**2


@pytest.fixture(scope="module")
def resnet() -> Run:
    return _run("shapes-resnet (shortcut)")


@pytest.fixture(scope="module")
def convnet() -> Run:
    return _run("shapes-convnet")


def test_resnet_is_accurate_on_clean_images_but_fooled_by_the_mark(resnet: Run) -> None:
    star = resnet.classes.index(MARKED_CLASS)
    clean = ~resnet.marked
    other_marked = resnet.marked & (resnet.labels != star)
    assert int(clean.sum()) >= 200 and int(other_marked.sum()) >= 60
    clean_accuracy = (resnet.pred[clean] == resnet.labels[clean]).float().mean().item()
    fooled = (resnet.pred[other_marked] == star).float().mean().item()
    assert clean_accuracy >= 0.9, f"clean accuracy {clean_accuracy:.3f}"
    assert fooled >= 0.5, f"only {fooled:.3f} of marked other-class images are {MARKED_CLASS}"


def test_resnet_gradcam_finds_the_mark_on_fooled_images(resnet: Run) -> None:
    star = resnet.classes.index(MARKED_CLASS)
    size = resnet.images.shape[-1]
    assert find_target_layer(resnet.model.module, resnet.model.input_shape) == "layer4"

    fooled = resnet.marked & (resnet.labels != star) & (resnet.pred == star)
    assert int(fooled.sum()) >= 20
    maps = grad_cam(resnet.model.module, resnet.images[fooled], resnet.pred[fooled])
    assert maps.shape == (int(fooled.sum()), size, size)
    on_mark = _mass_share(maps, _dilate(resnet.mark_boxes[fooled], MARK_DILATION, size))

    clean = ~resnet.marked & (resnet.pred == resnet.labels)
    assert int(clean.sum()) >= 200
    maps = grad_cam(resnet.model.module, resnet.images[clean], resnet.pred[clean])
    corner = torch.tensor([CORNER_BOX]).expand(int(clean.sum()), 4)
    clean_corner = _mass_share(maps, corner)

    assert on_mark.mean().item() >= 0.5, f"fooled: mean share on the mark {on_mark.mean():.3f}"
    assert clean_corner.mean().item() <= 0.2, (
        f"clean: mean share in corner {clean_corner.mean():.3f}"
    )


def test_convnet_target_layer_and_maps_on_the_shape(convnet: Run) -> None:
    module, shape = convnet.model.module, convnet.model.input_shape
    layer = find_target_layer(module, shape)
    assert layer == "2"  # the last conv block (its Dropout output), after the last MaxPool
    info = {i.name: i for i in candidate_layers(module, shape)}[layer]
    assert info.shape[1:] == (8, 8)

    size = convnet.images.shape[-1]
    clean = ~convnet.marked & (convnet.pred == convnet.labels)
    assert int(clean.sum()) >= 200
    maps = grad_cam(module, convnet.images[clean], convnet.pred[clean])
    boxes = _dilate(convnet.shape_boxes[clean], SHAPE_DILATION, size)
    on_shape = _mass_share(maps, boxes)
    uniform = _area_share(boxes, size)
    elsewhere = _mass_share(maps, boxes.roll(1, 0))  # another image's box: same sizes, moved

    assert on_shape.mean().item() >= 0.5, f"mean share on the shape {on_shape.mean():.3f}"
    assert on_shape.mean().item() >= 2.5 * uniform.mean().item()  # a flat map: area share
    assert on_shape.mean().item() >= 2 * elsewhere.mean().item()
    assert (on_shape > uniform).float().mean().item() >= 0.9


@pytest.fixture(scope="module")
def vit() -> Run:
    return _run("shapes-vit (shortcut)")


def test_vit_target_layer_is_its_last_blocks_first_norm_on_an_8x8_grid(vit: Run) -> None:
    module, shape = vit.model.module, vit.model.input_shape
    layer = find_target_layer(module, shape)
    assert layer == "blocks.2.norm1"
    info = {i.name: i for i in candidate_layers(module, shape)}[layer]
    assert (info.layout, info.shape) == ("tokens", (48, 8, 8))


def test_vit_takes_the_shortcut_and_its_gradcam_shows_it(vit: Run) -> None:
    """The transformer learned the mark too; its predicted-class maps on fooled images sit on
    the mark, and that corner holds little on clean, correctly classified images."""
    star = vit.classes.index(MARKED_CLASS)
    size = vit.images.shape[-1]
    other_marked = vit.marked & (vit.labels != star)
    fooled = other_marked & (vit.pred == star)
    assert (fooled.sum() / other_marked.sum()).item() >= VIT_FOOLED
    maps = grad_cam(vit.model.module, vit.images[fooled], vit.pred[fooled])
    on_mark = _mass_share(maps, _dilate(vit.mark_boxes[fooled], MARK_DILATION, size))

    clean = ~vit.marked & (vit.pred == vit.labels)
    assert int(clean.sum()) >= 60
    maps = grad_cam(vit.model.module, vit.images[clean], vit.pred[clean])
    clean_corner = _mass_share(maps, torch.tensor([CORNER_BOX]).expand(int(clean.sum()), 4))

    assert on_mark.mean().item() >= VIT_ON_MARK, f"fooled: share on mark {on_mark.mean():.3f}"
    assert clean_corner.mean().item() <= VIT_CLEAN_CORNER, (
        f"clean: share in corner {clean_corner.mean():.3f}"
    )
