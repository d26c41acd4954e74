"""How far to trust the maps of a model on a dataset: per image, per layer, per method.

The pieces the CLI (``python -m core faithfulness | sanity``) and the dashboard share: the
grid a map is scored on, images read as the evaluation reads them, the scores of an image's
predicted-class, true-class and random maps, the randomisation check on a seeded sample, and
the per-layer faithfulness of a seeded sample. The computations live in
:mod:`core.explain.faithfulness`, :mod:`core.explain.layer_trust` and :mod:`core.explain.sanity`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from core.data.datasets import ImageDataset
from core.errors import UserFacingError, reason_of
from core.results import Results

if TYPE_CHECKING:
    import torch

    from core.data.models import LoadedModel
    from core.explain.layer_trust import LayerScore
    from core.explain.sanity import SanityReport

__all__ = [
    "FAITHFULNESS",
    "LAYER_SAMPLE",
    "ImageTrust",
    "load_images",
    "load_layer_scores",
    "map_grid",
    "method_name",
    "model_sanity",
    "result_faithfulness",
    "sample_layer_faithfulness",
    "save_layer_scores",
    "score_images",
    "stored_faithfulness",
]

LAYER_SAMPLE = 64  # images in the fixed, seeded sample a layer is judged on
METHOD_ALIASES = {"grad-cam": "Grad-CAM", "grad-cam++": "Grad-CAM++", "cam": "CAM"}


def method_name(name: str) -> str:
    """A method as the CLI takes it (``grad-cam``, ``Grad-CAM``, ``saliency``...) -> its name."""
    from core.explain.cam import METHODS

    for known in METHODS:
        if name.lower() == known.lower():
            return known
    raise UserFacingError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")


def map_grid(model: LoadedModel, method: str, layer: str | None) -> tuple[int, int]:
    """The grid a map is scored on: the target layer's map size, or at most 14×14 cells for
    saliency (a map per pixel)."""
    from core.explain.cam import candidate_layers, find_target_layer
    from core.explain.faithfulness import default_grid

    if method == "Saliency":
        return default_grid(model.spec.input_size)
    name = layer or model.spec.layer or find_target_layer(model.module, model.input_shape)
    for info in candidate_layers(model.module, model.input_shape):
        if info.name == name:
            return int(info.shape[-2]), int(info.shape[-1])
    raise UserFacingError(f"layer {name!r} gives no spatial map for model {model.name!r}")


def load_images(
    model: LoadedModel, dataset: ImageDataset, paths: Sequence[str]
) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """Model inputs of the readable ``paths`` (the evaluation's own read, resize and
    normalisation), their positions in ``paths``, and (path, reason) for the others."""
    import torch

    tensors, kept, failed = [], [], []
    for i, path in enumerate(paths):
        try:
            tensors.append(model.normalize(model.resize(dataset.load(path, model.spec.channels))))
            kept.append(i)
        except Exception as exc:  # one bad file fails alone
            failed.append((path, reason_of(exc)))
    if not tensors:
        return torch.zeros(0, *model.input_shape), kept, failed
    return torch.stack(tensors), kept, failed


@dataclass(frozen=True)
class ImageTrust:
    """The scores of one image's predicted-class, true-class and random map."""

    path: str
    pred: dict[str, Any]
    true: dict[str, Any]
    random: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "pred": self.pred, "true": self.true, "random": self.random}


def score_images(
    model: LoadedModel,
    images: torch.Tensor,
    paths: Sequence[str],
    pred: Sequence[int],
    true: Sequence[int],
    classes: Sequence[str],
    method: str = "Grad-CAM",
    layer: str | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> list[ImageTrust]:
    """Per image: faithfulness of the predicted-class map, the true-class map and a seeded
    random map of the predicted-class map's cells (for the predicted class)."""
    import torch

    from core.explain.cam import METHODS
    from core.explain.faithfulness import faithfulness, random_maps

    if len(images) == 0:
        return []
    cls = torch.tensor([list(pred), list(true)], dtype=torch.long).T
    device_images = images.to(model.device)
    maps = METHODS[method](model.module, device_images, cls, layer=layer).cpu()
    rand = random_maps(maps[:, 0], map_grid(model, method, layer), seed)
    all_maps = torch.cat([maps, rand[:, None]], 1)
    all_cls = torch.cat([cls, cls[:, :1]], 1)
    scores = faithfulness(model.module, device_images, all_maps, all_cls, batch_size=batch_size)
    out = []
    for i, path in enumerate(paths):
        entries = []
        for k in range(3):
            record: dict[str, Any] = {"class": classes[int(all_cls[i, k])]}
            record.update(scores.record(i, k))
            entries.append(record)
        out.append(ImageTrust(str(path), *entries))
    return out


def model_sanity(
    model: LoadedModel,
    dataset: ImageDataset,
    method: str,
    layer: str | None,
    images: int = 64,
    seed: int = 0,
) -> SanityReport:
    """Adebayo's cascading randomisation on a seeded sample of ``images`` of ``dataset``
    (predicted classes, kept fixed), on a copy of the model."""
    import torch

    from core.explain.cam import METHODS, find_target_layer
    from core.explain.layer_trust import sample_rows
    from core.explain.sanity import sanity_check

    if method != "Saliency":
        layer = layer or model.spec.layer or find_target_layer(model.module, model.input_shape)
    rows = sample_rows(len(dataset), images, seed)
    x, _, _ = load_images(model, dataset, [dataset.paths[i] for i in rows])
    if len(x) == 0:
        raise UserFacingError(f"none of the {len(rows)} sampled images could be read")
    x = x.to(model.device)
    with torch.inference_mode():
        pred = model.module(x).argmax(1)
    fn = METHODS[method]

    def maps(m: torch.nn.Module, xs: torch.Tensor, c: torch.Tensor, lay: str | None) -> Any:
        return fn(m, xs, c, layer=lay)

    return sanity_check(model.module, x, pred, maps, method, layer)


def sample_layer_faithfulness(
    model: LoadedModel,
    dataset: ImageDataset,
    paths: Sequence[str],
    pred: Sequence[int],
    method: str = "Grad-CAM",
    layers: Sequence[str] | None = None,
    size: int = LAYER_SAMPLE,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[LayerScore]:
    """Median faithfulness of each candidate layer's maps (of the predicted class) on a fixed,
    seeded sample of ``size`` of the evaluated images (``paths``, ``pred``)."""
    import torch

    from core.explain.cam import candidate_layers
    from core.explain.layer_trust import layer_faithfulness, sample_rows

    infos = candidate_layers(model.module, model.input_shape)
    wanted = [
        (i.name, (int(i.shape[-2]), int(i.shape[-1])))
        for i in infos
        if (layers is None or i.name in layers) and i.shape[-2] * i.shape[-1] > 1
    ]
    rows = sample_rows(len(paths), size, seed)
    x, kept, _ = load_images(model, dataset, [paths[i] for i in rows])
    if len(x) == 0 or not wanted:
        return []
    cls = torch.as_tensor(np.asarray(pred)[rows][kept], dtype=torch.long)
    return layer_faithfulness(
        model.module, x.to(model.device), cls, wanted, method, progress=progress
    )


def _derived_name(method: str) -> str:
    return "layer_faithfulness_" + "".join(c if c.isalnum() else "_" for c in method.lower())


def save_layer_scores(result: Results, method: str, scores: Sequence[LayerScore]) -> bool:
    """Save per-layer scores beside ``result`` (``derived/layer_faithfulness_<method>``)."""
    from core.results.store import save_derived

    return save_derived(
        result,
        _derived_name(method),
        {
            "layer": np.array([s.layer for s in scores], dtype=np.str_),
            "median": np.array([s.median for s in scores], np.float64),
            "random_median": np.array([s.random_median for s in scores], np.float64),
            "count": np.array([s.count for s in scores], np.int64),
        },
    )


def load_layer_scores(result: Results, method: str) -> dict[str, LayerScore] | None:
    """Per-layer scores saved beside ``result``, or None."""
    from core.explain.layer_trust import LayerScore
    from core.results.store import load_derived

    found = load_derived(result, _derived_name(method))
    if found is None or not {"layer", "median", "random_median", "count"} <= set(found):
        return None
    return {
        str(name): LayerScore(str(name), float(m), float(r), int(c))
        for name, m, r, c in zip(
            found["layer"], found["median"], found["random_median"], found["count"], strict=True
        )
    }


FAITHFULNESS = "faithfulness"  # derived/faithfulness/: scores.npy [rows, 2] beside a result


def stored_faithfulness(result: Results) -> np.ndarray | None:
    """Scores of every manifest row's stored maps ``[rows, 2]`` (predicted class, then true
    class or runner-up; NaN for skipped rows), if the evaluation pass saved them."""
    from core.results.store import load_derived

    found = load_derived(result, FAITHFULNESS)
    if found is None or "scores" not in found:
        return None
    scores = found["scores"]
    return scores if scores.shape == (len(result.manifest), 2) else None


def result_faithfulness(
    model: LoadedModel,
    dataset: ImageDataset,
    result: Results,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Score the maps the evaluation stored (the Grad-CAM of the predicted class and of the
    true class or runner-up) of every evaluated image, save them beside the result
    (``derived/faithfulness``) and return them ``[rows, 2]`` (NaN where an image was skipped or
    cannot be read now).

    The probabilities before removal are the stored ones (``confidence``, ``true_prob``,
    ``runner_up_prob``: exact float32), so each image costs one decode and two forward passes
    (its two maps removed), on top of an evaluation's one decode and one pass.
    """
    import torch

    from core.explain.cam import finish_maps
    from core.explain.faithfulness import faithfulness
    from core.results.store import save_derived

    found = stored_faithfulness(result)
    if found is not None:
        return np.asarray(found)
    if not result.has_maps:
        raise UserFacingError(
            f"{result.folder} holds no maps (maps = false / --no-maps): nothing to score"
        )
    table = result.predictions
    scores = np.full((len(result.manifest), 2), np.nan, np.float32)
    total = len(table)
    for start in range(0, total, batch_size):
        rows = table.iloc[start : start + batch_size]
        index = rows["index"].to_numpy()
        x, kept, _ = load_images(model, dataset, list(rows["path"]))
        if kept:
            index = index[kept]
            rows = rows.iloc[kept]
            raw = torch.from_numpy(result.maps(index))
            maps = finish_maps(raw, model.spec.input_size)
            pred = rows["pred"].to_numpy()
            true = rows["true"].to_numpy()
            right = pred == true
            second = np.where(right, rows["runner_up"].to_numpy(), true)
            before = np.stack(
                [
                    rows["confidence"].to_numpy(),
                    np.where(right, rows["runner_up_prob"].to_numpy(), rows["true_prob"]),
                ],
                1,
            )
            cls = torch.from_numpy(np.stack([pred, second], 1).astype(np.int64))
            found_scores = faithfulness(
                model.module, x.to(model.device), maps, cls, batch_size, before=before, keep=False
            )
            scores[index] = found_scores.score
        if progress is not None:
            progress(min(start + batch_size, total), total)
    save_derived(result, FAITHFULNESS, {"scores": scores})
    return scores
