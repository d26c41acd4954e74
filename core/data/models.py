"""Build a trained classifier from a config entry.

Five ways in, as the config says: a torchvision architecture by name plus a state_dict; a
timm model name (``timm = ...``, built with ``pretrained=False``, nothing downloaded) plus a
checkpoint read as timm reads it (EMA weights preferred, ``module.`` prefixes removed), with input
size, interpolation, crop, mean and std from ``timm.data.resolve_model_data_config`` unless the
entry sets them; a user factory ``package.module:function`` (importable from the config's folder)
plus a state_dict; a transformers ``save_pretrained`` folder (``hf = ...``, see
:mod:`core.data.hf_models`); or a whole pickled module, only when the entry says ``trusted = true``
because unpickling runs arbitrary code. The returned model is in eval mode on its device. timm and
transformers are imported only when an entry needs them.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import math
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.transforms import v2

from core.config import CROP_MODES, PREPROCESSING_KEYS, ModelSpec
from core.errors import ModelLoadError

__all__ = [
    "LoadedModel",
    "ResizeTo",
    "architectures",
    "describe_preprocessing",
    "load_model",
    "read_state_dict",
]

_IMPORT_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadedModel:
    """A ready-to-run classifier and what is needed to feed it."""

    spec: ModelSpec
    module: nn.Module
    num_classes: int
    device: torch.device
    transform: v2.Compose
    """PIL image → normalised model input [C, H, W]: :attr:`resize` then :attr:`normalize`."""
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def resize(self) -> ResizeTo:
        """uint8 tensor [C, H, W] → the same at the input size (cheap; runs in loader workers)."""
        spec = self.spec
        return ResizeTo(
            spec.input_size, spec.interpolation, spec.crop_pct, spec.crop_mode, spec.crop_offset
        )

    @property
    def normalize(self) -> v2.Compose:
        """uint8 image or batch → normalised float32 model input (one op for a whole batch)."""
        return _normalize(self.spec)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The (C, H, W) shape of one model input."""
        return (self.spec.channels, *self.spec.input_size)


def architectures() -> list[str]:
    """Names of the torchvision classification builders that ``architecture =`` accepts."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def load_model(spec: ModelSpec) -> LoadedModel:
    """Build, load and check the model ``spec`` describes; raises :class:`ModelLoadError`."""
    notes_before: list[str] = []
    if spec.module is not None:
        module = _load_pickled(spec)
    elif spec.hf is not None:
        from core.data.hf_models import load_hf  # transformers: only for hf entries

        module, spec = load_hf(spec)
    else:
        assert spec.weights is not None  # guaranteed by load_config
        state = _read_timm_state(spec.weights) if spec.timm else read_state_dict(spec.weights)
        state, stripped = _strip_prefix(spec, state)
        module = _build(spec, state)
        _load_weights(module, state, spec)
        notes_before = [stripped] if stripped else []
        if spec.timm:
            spec = _timm_preprocessing(spec, module)
    device, notes = _device(spec.device)
    module = module.eval().to(device)
    if device.type == "cpu":
        module = module.to(memory_format=torch.channels_last)  # faster convolutions on CPU
    num_classes = _count_outputs(module, spec, device)
    if spec.classes is not None and len(spec.classes) != num_classes:
        raise ModelLoadError(
            f"model {spec.name!r}: config lists {len(spec.classes)} classes but the model "
            f"outputs {num_classes}"
        )
    if spec.hf is not None:  # as transformers' processors: on the uint8 tensor
        resize = ResizeTo(
            spec.input_size, spec.interpolation, spec.crop_pct, spec.crop_mode, spec.crop_offset
        )
        transform = v2.Compose([v2.PILToTensor(), resize, *_normalize(spec).transforms])
    else:
        transform = v2.Compose([*_resize(spec).transforms, *_normalize(spec).transforms])
    return LoadedModel(spec, module, num_classes, device, transform, (*notes_before, *notes))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.safetensors`` or ``.pt``/``.pth`` (``weights_only=True``).

    Accepts the common wrappers ``{"state_dict": ...}`` / ``{"model": ...}`` and strips a
    DataParallel ``module.`` prefix.
    """
    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # every reader raises its own types for a damaged file
        raise ModelLoadError(
            f"cannot read checkpoint {path}: {_reader_error(exc)}. Expected a state_dict saved "
            "with torch.save(model.state_dict()) or safetensors; a whole pickled model needs "
            "module = ... and trusted = true in the config."
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"checkpoint {path} does not hold a state_dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _strip_prefix(
    spec: ModelSpec, state: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state_dict with the key prefix that PyTorch Lightning (``self.model = ...``) and
    similar wrappers add removed, and a note saying so (None when nothing was stripped).

    ``state_dict_prefix`` in the entry names the prefix; otherwise a prefix is stripped only
    where exactly one common prefix (``model.``, ``net.``, ``backbone.`` ...) makes the keys
    match the architecture's exactly. Keys outside the prefix (a Lightning module's loss or
    metrics) are left out.
    """
    prefix = spec.state_dict_prefix
    if prefix is None:
        wanted = _architecture_keys(spec)
        if wanted is None or wanted <= state.keys():
            return state, None
        prefix = _matching_prefix(state, wanted, spec)
        if prefix is None:
            return state, None
    elif prefix and not prefix.endswith("."):
        prefix += "."
    kept = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    if not kept:
        raise ModelLoadError(
            f"model {spec.name!r}: no key of checkpoint {spec.weights} starts with "
            f"state_dict_prefix {prefix!r} (its first keys: {', '.join(list(state)[:5])})"
        )
    return kept, f"Checkpoint keys: prefix {prefix!r} stripped ({len(kept)} tensors)"


def _architecture_keys(spec: ModelSpec) -> set[str] | None:
    """The state_dict keys of the entry's architecture (built on the meta device), or None
    when it cannot be built that way (the build's own error is reported later)."""
    if spec.architecture is not None:
        builder = _torchvision_builder(spec.architecture, spec.name)
    elif spec.timm is not None:
        return None  # timm's own reader already cleans its wrappers
    else:
        assert spec.factory is not None
        builder = _import_factory(spec.factory, spec.base_dir, spec.name)
    try:
        with torch.device("meta"):
            return set(builder(**spec.factory_kwargs).state_dict())
    except Exception:
        return None


def _matching_prefix(
    state: dict[str, torch.Tensor], wanted: set[str], spec: ModelSpec
) -> str | None:
    """The one prefix (up to three dotted parts) whose removal makes ``state``'s keys the
    architecture's keys exactly; None when there is none; an error when several fit."""
    candidates = {
        ".".join(key.split(".")[:depth]) + "."
        for key in state
        for depth in (1, 2, 3)
        if key.count(".") > depth
    }
    fits = sorted(
        p for p in candidates if {k.removeprefix(p) for k in state if k.startswith(p)} == wanted
    )
    if len(fits) > 1:
        raise ModelLoadError(
            f"model {spec.name!r}: checkpoint {spec.weights} holds the architecture under "
            f"several prefixes ({', '.join(fits)}); say which with state_dict_prefix = ..."
        )
    return fits[0] if fits else None


def _build(spec: ModelSpec, state: dict[str, torch.Tensor]) -> nn.Module:
    if spec.architecture is not None:
        builder = _torchvision_builder(spec.architecture, spec.name)
    elif spec.timm is not None:
        builder = _timm_builder(spec.timm, spec.name)
    else:
        assert spec.factory is not None
        builder = _import_factory(spec.factory, spec.base_dir, spec.name)
    kwargs = dict(spec.factory_kwargs)
    # torchvision builders take num_classes through **kwargs, so their signature hides it
    takes_classes = (
        spec.architecture is not None
        or spec.timm is not None
        or "num_classes" in inspect.signature(builder).parameters
    )
    if takes_classes and "num_classes" not in kwargs:
        kwargs["num_classes"] = _classes_in_state(builder, kwargs, state, spec)
    try:
        module = builder(**kwargs)
    except Exception as exc:
        raise ModelLoadError(f"model {spec.name!r}: building it failed: {exc}") from None
    if not isinstance(module, nn.Module):
        raise ModelLoadError(
            f"model {spec.name!r}: factory {spec.factory} returned {type(module).__name__}, "
            "not a torch.nn.Module"
        )
    return module


def _torchvision_builder(arch: str, name: str) -> Any:
    known = architectures()
    if arch not in known:
        raise ModelLoadError(
            f"model {name!r}: unknown architecture {arch!r}. Known torchvision "
            f"architectures: {', '.join(known)}"
        )
    return torchvision.models.get_model_builder(arch)


def _timm_builder(name: str, model_name: str) -> Any:
    """``timm.create_model(name, pretrained=False, **kwargs)``; unknown names list close ones."""
    import timm  # lazily: only timm entries pay for the import

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ModelLoadError(
            f"model {model_name!r}: timm has no model {name!r}"
            + (f" (close: {', '.join(close)})" if close else "")
        )
    return functools.partial(timm.create_model, name, pretrained=False)


def _read_timm_state(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint read as ``timm.models.load_checkpoint`` reads it: EMA weights when present
    (``state_dict_ema`` / ``model_ema``), else ``state_dict`` / ``model``, and DataParallel /
    torch.compile prefixes removed (``clean_state_dict``); ``weights_only`` loading."""
    from timm.models import load_state_dict

    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    try:
        state = load_state_dict(str(path), use_ema=True, weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {_reader_error(exc)}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"checkpoint {path} does not hold a state_dict of tensors")
    return state


def _timm_preprocessing(spec: ModelSpec, module: nn.Module) -> ModelSpec:
    """``spec`` with the preprocessing the entry leaves unset taken from timm's data config
    (the model's ``pretrained_cfg``; the input size from ``img_size`` when the entry builds the
    model with one)."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(module)
    size = spec.factory_kwargs.get("img_size", cfg["input_size"][1:])
    size = (size, size) if isinstance(size, int) else size
    values: dict[str, Any] = {
        "input_size": (int(size[0]), int(size[1])),
        "mean": tuple(float(v) for v in cfg["mean"]),
        "std": tuple(float(v) for v in cfg["std"]),
        "interpolation": str(cfg["interpolation"]),
        "crop_pct": float(cfg["crop_pct"]),
        "crop_mode": str(cfg.get("crop_mode", "center")),
    }
    if values["crop_mode"] not in CROP_MODES:
        values["crop_mode"] = "center"  # timm's "border" mode is not supported: its default
    taken = tuple(k for k in PREPROCESSING_KEYS if k not in spec.explicit)
    if len(values["mean"]) != spec.channels and {"mean", "std"} & set(taken):
        raise ModelLoadError(
            f"model {spec.name!r}: timm's mean/std have {len(values['mean'])} values but the "
            f"entry says channels = {spec.channels}; set mean and std in the config"
        )
    return replace(spec, from_timm=taken, **{k: values[k] for k in taken})


def describe_preprocessing(spec: ModelSpec) -> str:
    """One line: size, interpolation, crop, mean/std, and where they come from."""
    crop = "no crop"
    if spec.crop_pct is not None:
        scale = _scale_size(spec.input_size, spec.crop_pct)
        if spec.crop_mode == "squash":
            sides = [scale, scale] if isinstance(scale, int) else scale
            crop = f"resize to {sides[0]}×{sides[1]}, center crop"
        else:
            crop = f"shorter side to {scale if isinstance(scale, int) else scale[0]}, center crop"
    mean = ", ".join(f"{v:.3g}" for v in spec.mean)
    std = ", ".join(f"{v:.3g}" for v in spec.std)
    line = (
        f"{spec.input_size[0]}×{spec.input_size[1]} · {spec.interpolation} · {crop} · "
        f"mean ({mean}) · std ({std})"
    )
    taken, source = spec.from_timm, "timm"
    if spec.from_processor:
        taken, source = spec.from_processor, f"the folder's {spec.processor}"
    if not taken:
        return f"{line} — from the config"
    if len(taken) == len(PREPROCESSING_KEYS):
        return f"{line} — from {source}"
    return f"{line} — from {source} ({', '.join(taken)}), the rest from the config"


def _classes_in_state(
    builder: Any, kwargs: dict[str, Any], state: dict[str, torch.Tensor], spec: ModelSpec
) -> int:
    """Output count of the checkpoint's classifier: the skeleton's last Linear/Conv layer."""
    try:
        with torch.device("meta"):  # no memory, no initialisation
            skeleton = builder(**kwargs)
    except Exception as exc:
        raise ModelLoadError(f"model {spec.name!r}: building it failed: {exc}") from None
    heads = [n for n, m in skeleton.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    key = f"{heads[-1]}.weight" if heads else ""
    if key not in state:
        raise ModelLoadError(
            f"model {spec.name!r}: checkpoint {spec.weights} has no {key!r}, so it is not a "
            f"state_dict of this architecture (its first keys: {', '.join(list(state)[:5])})"
        )
    return int(state[key].shape[0])


def _import_factory(target: str, base_dir: Path, name: str) -> Any:
    module_name, _, func_name = target.partition(":")
    if not module_name or not func_name:
        raise ModelLoadError(f"model {name!r}: factory must look like package.module:function")
    with _on_path(base_dir):
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ModelLoadError(
                f"model {name!r}: cannot import {module_name!r} from {base_dir}: {exc}"
            ) from None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise ModelLoadError(f"model {name!r}: {module_name} has no function {func_name!r}")
    return factory


@contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    """The config's folder on sys.path, only while importing or unpickling."""
    with _IMPORT_LOCK:
        sys.path.insert(0, str(folder))
        try:
            yield
        finally:
            sys.path.remove(str(folder))


def _load_weights(module: nn.Module, state: dict[str, torch.Tensor], spec: ModelSpec) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split("\n\t")[1:] or [str(exc)])[:600]  # one line
        raise ModelLoadError(
            f"model {spec.name!r}: checkpoint {spec.weights} does not fit the architecture: "
            f"{detail}"
        ) from None


def _load_pickled(spec: ModelSpec) -> nn.Module:
    assert spec.module is not None
    if not spec.trusted:
        raise ModelLoadError(
            f"model {spec.name!r}: refusing to unpickle {spec.module}: loading a whole pickled "
            "model runs arbitrary code from the file. Save a state_dict instead, or add "
            "trusted = true to this config entry if you trust where the file came from."
        )
    if not spec.module.is_file():
        raise ModelLoadError(f"model file not found: {spec.module}")
    try:
        with _on_path(spec.base_dir):  # the model's classes may live next to the config
            module = torch.load(spec.module, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot unpickle {spec.module}: {_first_line(exc)}") from None
    if not isinstance(module, nn.Module):
        raise ModelLoadError(
            f"{spec.module} holds a {type(module).__name__}, not a torch.nn.Module; "
            "for a state_dict use weights = ... with architecture or factory"
        )
    return module


def _device(requested: str) -> tuple[torch.device, list[str]]:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), []
    if requested.startswith("cuda") and not torch.cuda.is_available():
        return torch.device("cpu"), [f"device {requested!r} is not available here; using cpu"]
    return torch.device(requested), []


def _count_outputs(module: nn.Module, spec: ModelSpec, device: torch.device) -> int:
    probe = torch.zeros(1, *(spec.channels, *spec.input_size), device=device)
    try:
        with torch.inference_mode():
            out = module(probe)
    except Exception as exc:
        raise ModelLoadError(
            f"model {spec.name!r} fails on an input of shape {tuple(probe.shape)} "
            f"(check input_size and channels in the config): {_first_line(exc)}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ModelLoadError(
            f"model {spec.name!r} must return logits of shape [batch, classes], got "
            f"{getattr(out, 'shape', type(out).__name__)}"
        )
    return int(out.shape[1])


def _scale_size(size: Sequence[int], crop_pct: float) -> int | list[int]:
    """timm's eval resize target before the center crop: ``floor(size / crop_pct)``, an int
    (shorter edge) for square sizes."""
    scaled = [math.floor(s / crop_pct) for s in size]
    return scaled[0] if scaled[0] == scaled[1] else scaled


class ResizeTo:
    """uint8 image tensor → the input size (antialiased, with ``interpolation``), as the model's
    eval transform does it: straight to ``size``, or, with ``crop_pct``, timm's resize of the
    shorter edge (``crop_mode="center"``) or of both sides (``"squash"``) to ``size / crop_pct``
    then a center crop. The crop's offset is rounded as torchvision does it (``crop_offset=
    "round"``) or floored as transformers' image processors do it (``"floor"``).

    A plain picklable callable: a ``v2.Compose`` costs more per call than the resize itself on
    small images. On tensors the antialiased resize can differ from PIL's (``transform``'s) by a
    grey level at some pixels.
    """

    def __init__(
        self,
        size: Sequence[int],
        interpolation: str = "bilinear",
        crop_pct: float | None = None,
        crop_mode: str = "center",
        crop_offset: str = "round",
    ) -> None:
        self.size = [int(s) for s in size]
        self.interpolation = interpolation
        self.crop_pct = crop_pct
        self.crop_mode = crop_mode
        self.crop_offset = crop_offset

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if list(image.shape[-2:]) == self.size and self.crop_pct in (None, 1.0):
            return image  # (with a crop, an image at the input size is still scaled and cut)
        mode = v2.InterpolationMode(self.interpolation)
        if self.crop_pct is None:
            return v2.functional.resize(image, self.size, interpolation=mode, antialias=True)
        scale = _scale_size(self.size, self.crop_pct)
        if self.crop_mode == "squash":
            scale = [scale, scale] if isinstance(scale, int) else scale
        elif isinstance(scale, list):  # timm's ResizeKeepRatio: the shorter side fits
            ratio = min(image.shape[-2] / scale[0], image.shape[-1] / scale[1])
            scale = [round(image.shape[-2] / ratio), round(image.shape[-1] / ratio)]
        image = v2.functional.resize(image, scale, interpolation=mode, antialias=True)
        if self.crop_offset == "floor":
            (height, width), (h, w) = image.shape[-2:], self.size
            if height >= h and width >= w:  # transformers' center_crop: int((H - h) / 2)
                top, left = (height - h) // 2, (width - w) // 2
                return image[..., top : top + h, left : left + w]
        return v2.functional.center_crop(image, self.size)

    def __repr__(self) -> str:
        extra = f", {self.interpolation!r}" if self.interpolation != "bilinear" else ""
        extra += f", crop_pct={self.crop_pct}" if self.crop_pct is not None else ""
        extra += f", {self.crop_mode!r}" if self.crop_mode != "center" else ""
        extra += f", crop_offset={self.crop_offset!r}" if self.crop_offset != "round" else ""
        return f"ResizeTo({self.size}{extra})"


def _resize(spec: ModelSpec) -> v2.Compose:
    """PIL image → uint8 tensor at the input size: PIL's resize (and crop), as timm's and
    torchvision's eval transforms do it."""
    mode = v2.InterpolationMode(spec.interpolation)
    if spec.crop_pct is None:
        return v2.Compose([v2.PILToTensor(), v2.Resize(spec.input_size, mode, antialias=True)])
    if isinstance(scale := _scale_size(spec.input_size, spec.crop_pct), list):
        raise ModelLoadError(
            f"model {spec.name!r}: crop_pct needs a square input_size here, got {spec.input_size}"
        )
    if spec.crop_mode == "squash":
        scale = [scale, scale]
    return v2.Compose(
        [
            v2.Resize(scale, mode, antialias=True),  # on the PIL image, as timm does
            v2.CenterCrop(spec.input_size),
            v2.PILToTensor(),
        ]
    )


def _normalize(spec: ModelSpec) -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)])


def _reader_error(exc: BaseException) -> str:
    """Why a checkpoint could not be read, in words, plus the reader's own reason, without
    torch's advice to retry with ``weights_only=False`` (that would unpickle, i.e. run, the
    file's contents)."""
    text = str(exc)
    if text.startswith("Weights only load failed"):
        detail = text.partition("WeightsUnpickler error:")[2].strip().splitlines()
        reason = detail[0].strip() if detail else "it holds more than tensors"
    else:
        reason = _first_line(exc)
    return f"the file is damaged or not a checkpoint (the reader said: {reason})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
