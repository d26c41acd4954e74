"""Hugging Face ``transformers`` image classifiers from a ``save_pretrained`` folder (``hf = ...``).

The folder is read with ``AutoModelForImageClassification`` and ``AutoImageProcessor`` from local
files only (``local_files_only=True``, ``HF_HUB_OFFLINE=1``, no remote code): a path, never a hub
id, so nothing is downloaded. The model is wrapped in :class:`HfClassifier`, a plain
``images → logits`` module (pytorch-grad-cam's recipe), so every map method and the evaluation
treat it like any other classifier; its layers are named ``model.<transformers name>``, e.g.
``model.vit.layers.11.layernorm_before``.

Preprocessing is the folder's image processor's, expressed in the project's own terms
(``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``) so that it runs
on the same uint8-tensor path as every other model and any value can be overridden in the entry:

* a resize to ``size = {height, width}`` with no crop (ViT, Swin, BEiT);
* a resize to ``{height, width}`` then a center crop to ``crop_size`` (DeiT): ``crop_mode =
  "squash"`` with ``crop_pct = crop / size``;
* the shorter side to ``shortest_edge`` then a center crop (BiT, DINOv2): ``crop_mode = "center"``;
* ConvNeXt's rule (also ResNet's and RegNet's processor): below 384 px the shorter side goes to
  ``shortest_edge / crop_pct``, then a center crop of ``shortest_edge``; from 384 px a straight
  resize (a warp, no crop);
* rescale and normalise folded into one mean/std: ``(x * rescale_factor - mean) / std``;
* ``TimmWrapper`` folders: timm's data config, as for ``timm = ...`` entries.

Center crops take transformers' offset (``int((H - h) / 2)``; torchvision rounds). Processors
whose preprocessing is something else (their own ``resize`` or ``_preprocess``) are refused with
a message that says which values to set in the entry instead.

transformers is imported only here, and only when an ``hf`` entry is loaded.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.config import CROP_MODES, INTERPOLATIONS, PREPROCESSING_KEYS, ModelSpec
from core.errors import ModelLoadError

__all__ = ["HfClassifier", "load_hf", "processor_values"]

#: Model types whose encoders output a class token (and DeiT's distillation token) followed by a
#: row-major grid of patch tokens: their patch size fixes the grid of a token layer.
_PATCH_GRID_TYPES = ("vit", "deit", "beit", "data2vec-vision", "dinov2", "dinov2_with_registers")
#: Image processors whose preprocessing is the generic resize → center crop → rescale → normalise
#: although they override a step (BEiT's only adds segmentation-label handling).
_GENERIC_BY_NAME = ("BeitImageProcessor",)
_PIL_RESAMPLING = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling values
_NAMES = {1: "lanczos", 4: "box", 5: "hamming"}


class HfClassifier(nn.Module):
    """A transformers image classifier as an ``images → logits`` module.

    ``patch_size`` and ``num_prefix_tokens`` (when known) tell
    :func:`core.explain.layers.layout_of` how a token layer's output is a grid.
    """

    def __init__(
        self,
        model: nn.Module,
        patch_size: tuple[int, int] | None = None,
        num_prefix_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        if patch_size is not None:
            self.patch_size = patch_size
        if num_prefix_tokens is not None:
            self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x).logits  # type: ignore[no-any-return]


def load_hf(spec: ModelSpec) -> tuple[HfClassifier, ModelSpec]:
    """The classifier in ``spec.hf`` and ``spec`` with the preprocessing the entry leaves unset
    taken from the folder's image processor; raises :class:`ModelLoadError`."""
    folder = _checked_folder(spec)
    transformers = _transformers()
    try:
        model, info = transformers.AutoModelForImageClassification.from_pretrained(
            str(folder),
            local_files_only=True,
            trust_remote_code=False,
            dtype=torch.float32,
            output_loading_info=True,
        )
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... per problem
        raise ModelLoadError(
            f"model {spec.name!r}: cannot load {folder} with AutoModelForImageClassification: "
            f"{_first_line(exc)}"
        ) from None
    missing = list(info.get("missing_keys", ()))
    if missing:  # transformers would leave them randomly initialised
        raise ModelLoadError(
            f"model {spec.name!r}: the weights in {folder} lack {len(missing)} of the model's "
            f"tensors ({', '.join(sorted(missing)[:5])}), so they are not this model's weights"
        )
    module = HfClassifier(model.eval(), *_token_grid_hints(model))
    _check_layer(spec, module)
    # transformers' processors floor a center crop's offset; timm's transform (TimmWrapper) rounds
    offset = "round" if hasattr(model, "timm_model") else "floor"
    return module, _preprocessing(replace(spec, crop_offset=offset), folder, transformers)


def _check_layer(spec: ModelSpec, module: HfClassifier) -> None:
    """A configured ``layer`` written with transformers' own name (without ``model.``) gets a
    message that gives the name to use."""
    if spec.layer is None or spec.layer.startswith("model."):
        return
    try:
        module.model.get_submodule(spec.layer)
    except AttributeError:
        return  # not a transformers name either: reported where layers are resolved
    raise ModelLoadError(
        f"model {spec.name!r}: layer {spec.layer!r}: the layers of an hf entry are named "
        f'model.<transformers name>; write layer = "model.{spec.layer}"'
    )


def _checked_folder(spec: ModelSpec) -> Path:
    assert spec.hf is not None
    folder = spec.hf
    if not folder.is_dir():
        raise ModelLoadError(
            f"model {spec.name!r}: hf folder not found: {folder} (hf = ... is a folder written "
            "by save_pretrained; nothing is downloaded, so a hub id does not work here)"
        )
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"model {spec.name!r}: {folder} has no config.json, so it is not a folder written by "
            "model.save_pretrained(...)"
        )
    return folder


def _transformers() -> Any:
    """transformers, imported offline (nothing may be downloaded at run time)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    return transformers


def _token_grid_hints(model: nn.Module) -> tuple[tuple[int, int] | None, int | None]:
    """(patch size, prefix tokens) of ViT-like models and timm models in a TimmWrapper."""
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None:
        size = getattr(getattr(timm_model, "patch_embed", None), "patch_size", None)
        prefix = getattr(timm_model, "num_prefix_tokens", None)
        patch = (int(size[0]), int(size[1])) if isinstance(size, tuple | list) else None
        return patch, prefix if isinstance(prefix, int) else None
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in _PATCH_GRID_TYPES:
        return None, None
    size = getattr(config, "patch_size", None)
    if isinstance(size, int):
        return (size, size), None
    if isinstance(size, tuple | list) and len(size) == 2:
        return (int(size[0]), int(size[1])), None
    return None, None


# --------------------------------------------------------------------------- preprocessing


def _preprocessing(spec: ModelSpec, folder: Path, transformers: Any) -> ModelSpec:
    taken = tuple(k for k in PREPROCESSING_KEYS if k not in spec.explicit)
    if not taken:
        return spec
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:
        needed = [k for k in ("input_size", "mean", "std") if k not in spec.explicit]
        if not needed:  # the entry says enough; the rest keeps the config's defaults
            return spec
        raise ModelLoadError(
            f"model {spec.name!r}: no image processor could be read from {folder} "
            f"({_first_line(exc)}). Save it there with processor.save_pretrained(folder), or "
            f"set {', '.join(needed)} in the entry"
        ) from None
    name = type(processor).__name__
    values, problems = processor_values(processor)
    stuck = [k for k in taken if k in problems]
    if stuck:
        raise ModelLoadError(
            f"model {spec.name!r}: the image processor in {folder} ({name}) "
            f"{'; '.join(dict.fromkeys(problems[k] for k in stuck))}. Set "
            f"{', '.join(stuck)} in the entry"
        )
    if len(values["mean"]) != spec.channels and {"mean", "std"} & set(taken):
        raise ModelLoadError(
            f"model {spec.name!r}: the image processor's mean/std have {len(values['mean'])} "
            f"values but the entry says channels = {spec.channels}; set mean and std in the entry"
        )
    return replace(spec, from_processor=taken, processor=name, **{k: values[k] for k in taken})


def processor_values(processor: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """A transformers image processor's eval preprocessing as the project's preprocessing values
    (``PREPROCESSING_KEYS``), and, for each value it cannot express, why."""
    name = type(processor).__name__
    if name == "TimmWrapperImageProcessor":
        return _timm_values(processor.data_config)
    values: dict[str, Any] = {"crop_mode": "center"}
    problems: dict[str, str] = {}
    geometry = ("input_size", "crop_pct", "crop_mode")
    if not _generic(processor) and not name.startswith("ConvNextImageProcessor"):
        why = "preprocesses images in its own way, which is not reproduced here"
        return _normalisation(processor, values), dict.fromkeys(PREPROCESSING_KEYS, why)
    values["interpolation"] = _PIL_RESAMPLING.get(int(processor.resample))
    if values["interpolation"] is None:
        method = _NAMES.get(int(processor.resample), str(processor.resample))
        problems["interpolation"] = (
            f"resizes with {method} interpolation (supported: {', '.join(INTERPOLATIONS)})"
        )
    if not processor.do_resize:
        problems.update(dict.fromkeys(geometry, "does not resize (images keep their own sizes)"))
    elif name.startswith("ConvNextImageProcessor"):
        edge = int(processor.size.shortest_edge or 0)
        crop = float(processor.crop_pct) if edge < 384 else None  # from 384 px: a warp, no crop
        values.update(input_size=(edge, edge), crop_pct=crop, crop_mode="center")
        if not edge:
            problems.update(dict.fromkeys(geometry, f"has no shortest_edge in {processor.size}"))
    else:
        try:
            values.update(_generic_geometry(processor))
        except ValueError as exc:
            problems.update(dict.fromkeys(geometry, str(exc)))
    return _normalisation(processor, values), problems


def _generic(processor: Any) -> bool:
    """Whether the processor's steps are transformers' torchvision backend's own."""
    from transformers.image_processing_backends import TorchvisionBackend

    if type(processor).__name__ in _GENERIC_BY_NAME:
        return True
    steps = ("_preprocess", "resize", "center_crop", "rescale_and_normalize")
    return isinstance(processor, TorchvisionBackend) and all(
        getattr(type(processor), s) is getattr(TorchvisionBackend, s) for s in steps
    )


def _generic_geometry(processor: Any) -> dict[str, Any]:
    size, crop = processor.size, processor.crop_size if processor.do_center_crop else None
    if size.height and size.width and not size.shortest_edge:
        if crop is None:
            return {"input_size": (size.height, size.width), "crop_pct": None}
        pct = _crop_pct((crop.height, crop.width), (size.height, size.width))
        return {"input_size": (crop.height, crop.width), "crop_pct": pct, "crop_mode": "squash"}
    if size.shortest_edge and not (size.longest_edge or size.height or size.width):
        if crop is None:
            raise ValueError("resizes the shorter side only, so images keep their aspect ratios")
        if crop.height != crop.width:
            raise ValueError(f"crops a non-square {crop.height}×{crop.width} after the resize")
        pct = _crop_pct((crop.height, crop.width), (size.shortest_edge, size.shortest_edge))
        return {"input_size": (crop.height, crop.width), "crop_pct": pct, "crop_mode": "center"}
    raise ValueError(f"resizes to {dict(size)}, which is not reproduced here")


def _crop_pct(crop: tuple[int, int], size: tuple[int, int]) -> float:
    """The ``crop_pct`` for which ``floor(crop / crop_pct)`` is ``size`` on both sides (the
    resize before a center crop), nudged by a few ulps where the plain ratio rounds wrong."""
    if crop[0] > size[0] or crop[1] > size[1]:
        raise ValueError(f"crops {crop[0]}×{crop[1]} out of a smaller {size[0]}×{size[1]} resize")
    pct = crop[0] / size[0]
    for _ in range(8):
        got = [math.floor(c / pct) for c in crop]
        if got == list(size):
            return pct
        pct = math.nextafter(pct, 0.0 if got[0] < size[0] else 1.0)
    raise ValueError(
        f"resizes to {size[0]}×{size[1]} before a {crop[0]}×{crop[1]} crop, which is not "
        "one crop ratio on both sides"
    )


def _normalisation(processor: Any, values: dict[str, Any]) -> dict[str, Any]:
    """mean/std of ``(x / 255 - mean) / std`` equal to the processor's rescale and normalise of
    a uint8 image ``x``: ``(x * rescale_factor - image_mean) / image_std``."""
    scale = 255.0 * float(processor.rescale_factor) if processor.do_rescale else 255.0
    scale = 1.0 if math.isclose(scale, 1.0, rel_tol=1e-12) else scale
    channels = 3
    if processor.do_normalize:
        mean = processor.image_mean
        std = processor.image_std
        mean = [mean] * channels if isinstance(mean, int | float) else list(mean)
        std = [std] * channels if isinstance(std, int | float) else list(std)
    else:
        mean, std = [0.0] * channels, [1.0] * channels
    values["mean"] = tuple(float(m) / scale for m in mean)
    values["std"] = tuple(float(s) / scale for s in std)
    return values


def _timm_values(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """timm's data config (a TimmWrapper folder's processor) as preprocessing values."""
    mode = str(cfg.get("crop_mode", "center"))
    values = {
        "input_size": (int(cfg["input_size"][1]), int(cfg["input_size"][2])),
        "mean": tuple(float(v) for v in cfg["mean"]),
        "std": tuple(float(v) for v in cfg["std"]),
        "interpolation": str(cfg["interpolation"]),
        "crop_pct": float(cfg["crop_pct"]),
        "crop_mode": mode if mode in CROP_MODES else "center",
    }
    problems = {}
    if values["interpolation"] not in INTERPOLATIONS:
        problems["interpolation"] = f"resizes with {values['interpolation']} interpolation"
    return values, problems


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
