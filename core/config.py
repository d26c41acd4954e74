"""The project config: a TOML file naming the models and test sets to analyse.

Paths in the file are relative to the file's folder. Example::

    cache_dir = ".cache"              # optional; predictions cache and notes database

    [[models]]
    name = "digits-cnn"
    factory = "digits_model:build"    # or: architecture = "resnet18" (any torchvision builder)
    weights = "digits/weights.safetensors"
    input_size = [32, 32]
    channels = 1                      # 1 = grayscale input, 3 = RGB (default)
    mean = [0.5]
    std = [0.5]

    [[models]]
    name = "vit"
    timm = "vit_small_patch16_224"    # a timm model (pretrained=False: nothing is downloaded)
    weights = "vit.safetensors"       # size, interpolation, crop, mean, std: from timm unless set
    # interpolation = "bicubic"       # nearest | bilinear | bicubic (default bilinear)
    # crop_pct = 0.9                  # resize to size / crop_pct, then center-crop (default none)
    # crop_mode = "squash"            # center (shorter side to size / crop_pct) | squash (both)

    [[models]]
    name = "finetuned-vit"
    hf = "vit-finetuned"              # a transformers save_pretrained folder (local files only);
                                      # classes from its id2label, preprocessing from its image
                                      # processor unless set here

    [[datasets]]
    name = "digits-test"
    root = "digits/test"              # ImageFolder tree; or add csv = "manifest.csv" (path,label)
    metadata = "digits/meta.csv"      # optional: path plus metadata columns (site, date, ...)
    link_roots = ["../dvc-cache"]     # optional: where its symlinks may point besides root
    max_pixels = 89478485             # optional: larger images are skipped (decompression bombs)

    [[datasets]]
    name = "hf-test"
    parquet = ["data/test-*.parquet"] # Parquet as Hugging Face datasets writes it (image, label);
                                      # or arrow = "folder" (a save_to_disk folder)
    # image_column = "image"          # optional column names
    # label_column = "label"
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from core.errors import ConfigError

__all__ = [
    "CROP_MODES",
    "DEFAULT_MAX_PIXELS",
    "INTERPOLATIONS",
    "MAX_PIXELS_CAP",
    "PREPROCESSING_KEYS",
    "DatasetSpec",
    "ModelSpec",
    "ProjectConfig",
    "load_config",
]

_MODEL_KEYS = {
    "name", "architecture", "factory", "factory_kwargs", "weights", "module", "trusted",
    "input_size", "channels", "mean", "std", "classes", "device", "batch_size", "layer",
    "datasets", "maps", "results", "timm", "interpolation", "crop_pct", "description",
    "faithfulness", "embeddings", "hf", "crop_mode", "state_dict_prefix",
}  # fmt: skip
PREPROCESSING_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
CROP_MODES = ("center", "squash")
_DATASET_KEYS = {
    "name", "root", "csv", "classes", "link_roots", "max_pixels", "parquet", "arrow",
    "image_column", "label_column", "metadata",
}  # fmt: skip
_TOP_KEYS = {"cache_dir", "models", "datasets", "notes_db", "tags"}
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own warning threshold: 1 GiB of RGBA / 3
MAX_PIXELS_CAP = 2 * DEFAULT_MAX_PIXELS  # PIL refuses to open anything larger
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """One ``[[models]]`` entry, with paths made absolute."""

    name: str
    weights: Path | None = None
    architecture: str | None = None
    factory: str | None = None
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    module: Path | None = None
    trusted: bool = False
    input_size: tuple[int, int] = (224, 224)
    channels: int = 3
    mean: tuple[float, ...] = _IMAGENET_MEAN
    std: tuple[float, ...] = _IMAGENET_STD
    classes: tuple[str, ...] | None = None
    device: str = "auto"
    batch_size: int = 64
    layer: str | None = None
    datasets: tuple[str, ...] | None = None  # the datasets it is evaluated on (None: all)
    maps: bool = True  # store the predicted/true-class Grad-CAM of every image while evaluating
    faithfulness: bool = False  # also score those maps' faithfulness (saved beside the result)
    embeddings: bool = True  # store every image's classifier-head input (the Map, similar images)
    results: tuple[Path, ...] = ()  # result folders made elsewhere (python -m core evaluate --out)
    base_dir: Path = Path(".")
    timm: str | None = None  # a timm model name (built with pretrained=False)
    interpolation: str = "bilinear"
    crop_pct: float | None = None  # None: resize straight to input_size (no crop)
    crop_mode: str = "center"  # with crop_pct: center (shorter side scaled) or squash (both sides)
    explicit: frozenset[str] = frozenset()  # the PREPROCESSING_KEYS the entry sets itself
    from_timm: tuple[str, ...] = ()  # the PREPROCESSING_KEYS taken from timm (set when loaded)
    description: str = ""  # shown above the model's confusion matrix (Markdown)
    hf: Path | None = None  # a transformers save_pretrained folder
    from_processor: tuple[str, ...] = ()  # the PREPROCESSING_KEYS taken from its image processor
    processor: str | None = None  # that image processor's class name (set when loaded)
    crop_offset: str = "round"  # center-crop offset rule: torchvision's (round) or HF's (floor)
    state_dict_prefix: str | None = None  # checkpoint key prefix to strip (e.g. "model.")


@dataclass(frozen=True)
class DatasetSpec:
    """One ``[[datasets]]`` entry: an ImageFolder tree, a CSV manifest under ``root``, Parquet
    files (``parquet``: absolute glob patterns) or a ``save_to_disk`` folder (``arrow``).

    A file is read only if its resolved target lies under ``root`` or one of ``link_roots``
    (e.g. a DVC or git-annex cache), and only if it has at most ``max_pixels`` pixels.
    """

    name: str
    root: Path
    csv: Path | None = None
    classes: tuple[str, ...] | None = None
    link_roots: tuple[Path, ...] = ()
    max_pixels: int = DEFAULT_MAX_PIXELS
    parquet: tuple[str, ...] = ()
    arrow: Path | None = None
    image_column: str = "image"
    label_column: str = "label"
    metadata: Path | None = None  # a CSV of path plus metadata columns (ImageFolder and csv)


@dataclass(frozen=True)
class ProjectConfig:
    """A parsed project config."""

    path: Path
    models: tuple[ModelSpec, ...]
    datasets: tuple[DatasetSpec, ...]
    cache_dir: Path
    notes_db: Path
    tags: tuple[str, ...] = ("label error", "ambiguous", "spurious cue", "model error")

    def model(self, name: str | None = None) -> ModelSpec:
        """The model called ``name`` (the first one when ``name`` is None)."""
        return _pick(self.models, name, "model", self.path)

    def datasets_for(self, model: str) -> list[str]:
        """Names of the datasets ``model`` is evaluated on (all, unless its entry lists some)."""
        allowed = self.model(model).datasets
        return [d.name for d in self.datasets if allowed is None or d.name in allowed]

    def comparable_models(self, model: str, dataset: str) -> list[str]:
        """The other models that can be compared with ``model`` on ``dataset``, best first:
        those whose entries list the dataset and declare ``model``'s classes, then those that
        may fit (no ``datasets`` list, or classes left to the checkpoint). Models declaring
        other classes are left out."""
        mine = self.model(model).classes

        def rank(spec: ModelSpec) -> int:
            listed = spec.datasets is not None and dataset in spec.datasets
            same = mine is not None and spec.classes == mine
            return 0 if listed and same else 1 if listed or same else 2

        fits = [
            spec
            for spec in self.models
            if spec.name != model
            and dataset in self.datasets_for(spec.name)
            and (mine is None or spec.classes is None or spec.classes == mine)
        ]
        return [spec.name for spec in sorted(fits, key=rank)]  # stable: config order within

    def dataset(self, name: str | None = None) -> DatasetSpec:
        """The dataset called ``name`` (the first one when ``name`` is None)."""
        return _pick(self.datasets, name, "dataset", self.path)


def _pick(entries: tuple[Any, ...], name: str | None, kind: str, path: Path) -> Any:
    if name is None:
        return entries[0]
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in entries)
    raise ConfigError(f"{path}: no {kind} named {name!r} (known: {known})")


def load_config(path: str | Path) -> ProjectConfig:
    """Read and validate a project config; raises :class:`ConfigError` naming the problem."""
    path = Path(path).expanduser().resolve()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    _check_keys(data, _TOP_KEYS, f"{path}")
    base = path.parent
    models = tuple(_checked(_model_spec, m, base, path) for m in _entries(data, "models", path))
    datasets = tuple(
        _checked(_dataset_spec, d, base, path) for d in _entries(data, "datasets", path)
    )
    for kind, items in (("model", models), ("dataset", datasets)):
        names = [item.name for item in items]
        if len(set(names)) != len(names):
            raise ConfigError(f"{path}: {kind} names must be unique, got {names}")
    known = {d.name for d in datasets}
    for spec in models:
        unknown = sorted(set(spec.datasets or ()) - known)
        if unknown:
            raise ConfigError(f"{path}: model {spec.name!r} lists unknown datasets {unknown}")
    cache_dir = base / str(data.get("cache_dir", ".cache"))
    notes_db = base / str(data["notes_db"]) if "notes_db" in data else cache_dir / "notes.sqlite"
    tags = tuple(str(t) for t in data.get("tags", ProjectConfig.tags))
    return ProjectConfig(path, models, datasets, cache_dir, notes_db, tags)


def _checked(build: Any, entry: dict[str, Any], base: Path, path: Path) -> Any:
    """``build(entry)``; a value of the wrong type (``channels = "x"``) is a ConfigError."""
    try:
        return build(entry, base, path)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{path}: entry {entry.get('name')!r} has an invalid value: {exc}"
        ) from None


def _entries(data: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    entries = data.get(key)
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: needs at least one [[{key}]] entry")
    if not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path}: every {key} entry must be a [[{key}]] table")
    return entries


def _check_keys(entry: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _name(entry: dict[str, Any], kind: str, path: Path) -> str:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: every [[{kind}]] entry needs a non-empty name")
    return name


def _model_spec(entry: dict[str, Any], base: Path, path: Path) -> ModelSpec:
    name = _name(entry, "models", path)
    where = f"{path}: model {name!r}"
    _check_keys(entry, _MODEL_KEYS, where)
    sources = [k for k in ("architecture", "factory", "module", "timm", "hf") if k in entry]
    if len(sources) != 1:
        raise ConfigError(
            f"{where}: give exactly one of architecture (a torchvision builder), "
            "factory (package.module:function), timm (a timm model name), hf (a transformers "
            f"save_pretrained folder) or module (a whole pickled model); got {sources}"
        )
    hf = _hf_folder(entry, base, where)
    if hf is None and "module" not in entry and "weights" not in entry:
        raise ConfigError(
            f"{where}: needs weights = <state_dict checkpoint (.pt/.pth/.safetensors)>"
        )
    channels = int(entry.get("channels", 3))
    if channels not in (1, 3):
        raise ConfigError(f"{where}: channels must be 1 or 3, got {channels}")
    default_mean = _IMAGENET_MEAN if channels == 3 else (0.5,)
    default_std = _IMAGENET_STD if channels == 3 else (0.5,)
    mean = tuple(float(v) for v in entry.get("mean", default_mean))
    std = tuple(float(v) for v in entry.get("std", default_std))
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"{where}: mean and std need {channels} value(s) (one per channel)")
    size = entry.get("input_size", [224, 224])
    size = [size, size] if isinstance(size, int) else size
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise ConfigError(f"{where}: input_size must be [height, width], got {size}")
    device = str(entry.get("device", "auto"))
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"{where}: device must be auto, cpu or cuda, got {device!r}")
    trusted = entry.get("trusted", False)
    if not isinstance(trusted, bool):  # bool("false") is True
        raise ConfigError(f"{where}: trusted must be true or false (unquoted), got {trusted!r}")
    batch_size = int(entry.get("batch_size", 64))
    if batch_size < 1:
        raise ConfigError(f"{where}: batch_size must be at least 1, got {batch_size}")
    maps = entry.get("maps", True)
    if not isinstance(maps, bool):
        raise ConfigError(f"{where}: maps must be true or false (unquoted), got {maps!r}")
    faithfulness = entry.get("faithfulness", False)
    if not isinstance(faithfulness, bool):
        raise ConfigError(
            f"{where}: faithfulness must be true or false (unquoted), got {faithfulness!r}"
        )
    embeddings = entry.get("embeddings", True)
    if not isinstance(embeddings, bool):
        raise ConfigError(
            f"{where}: embeddings must be true or false (unquoted), got {embeddings!r}"
        )
    results = entry.get("results", [])
    results = [results] if isinstance(results, str) else results
    interpolation = str(entry.get("interpolation", "bilinear"))
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(
            f"{where}: interpolation must be one of {', '.join(INTERPOLATIONS)}, "
            f"got {interpolation!r}"
        )
    crop_pct = float(entry["crop_pct"]) if "crop_pct" in entry else None
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise ConfigError(f"{where}: crop_pct must be in (0, 1], got {crop_pct}")
    crop_mode = str(entry.get("crop_mode", "center"))
    if crop_mode not in CROP_MODES:
        raise ConfigError(
            f"{where}: crop_mode must be one of {', '.join(CROP_MODES)}, got {crop_mode!r}"
        )
    classes = entry.get("classes")
    if classes is None and hf is not None:
        classes = _hf_class_names(hf)
    return ModelSpec(
        name=name,
        weights=base / entry["weights"] if "weights" in entry else None,
        architecture=entry.get("architecture"),
        factory=entry.get("factory"),
        factory_kwargs=dict(entry.get("factory_kwargs", {})),
        module=base / entry["module"] if "module" in entry else None,
        trusted=trusted,
        input_size=(int(size[0]), int(size[1])),
        channels=channels,
        mean=mean,
        std=std,
        classes=tuple(str(c) for c in classes) if classes is not None else None,
        device=device,
        batch_size=batch_size,
        layer=entry.get("layer"),
        datasets=tuple(str(d) for d in entry["datasets"]) if "datasets" in entry else None,
        maps=maps,
        faithfulness=faithfulness,
        embeddings=embeddings,
        results=tuple((base / str(r)).resolve() for r in results),
        base_dir=base,
        timm=str(entry["timm"]) if "timm" in entry else None,
        interpolation=interpolation,
        crop_pct=crop_pct,
        crop_mode=crop_mode,
        explicit=frozenset(k for k in PREPROCESSING_KEYS if k in entry),
        description=str(entry.get("description", "")),
        hf=hf,
        state_dict_prefix=(
            str(entry["state_dict_prefix"]) if "state_dict_prefix" in entry else None
        ),
    )


def _hf_folder(entry: dict[str, Any], base: Path, where: str) -> Path | None:
    """The ``hf`` folder of an entry (a path, never a hub id; its contents are checked when the
    model is loaded, so a missing folder does not stop the other entries)."""
    if "hf" not in entry:
        return None
    if not isinstance(entry["hf"], str) or not entry["hf"]:
        raise ConfigError(f"{where}: hf must be the path of a save_pretrained folder")
    if "weights" in entry:
        raise ConfigError(
            f"{where}: an hf folder holds its own weights; remove weights = ... from the entry"
        )
    return (base / entry["hf"]).resolve()


def _hf_class_names(folder: Path) -> list[str] | None:
    """Class names from a save_pretrained folder's ``config.json`` ``id2label`` (string keys
    ``"0"``, ``"1"``, ...), or None when there are none to read or they are transformers'
    placeholders ``LABEL_0``, ``LABEL_1``, ... (the dataset's folder names then give the order).
    A missing or broken file is reported when the model is loaded."""
    try:
        labels = json.loads((folder / "config.json").read_text(encoding="utf-8"))["id2label"]
        names = [str(labels[str(i)]) for i in range(len(labels))]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not names or names == [f"LABEL_{i}" for i in range(len(names))]:
        return None
    return names


def _dataset_spec(entry: dict[str, Any], base: Path, path: Path) -> DatasetSpec:
    name = _name(entry, "datasets", path)
    where = f"{path}: dataset {name!r}"
    _check_keys(entry, _DATASET_KEYS, where)
    kinds = [k for k in ("root", "csv", "parquet", "arrow") if k in entry]
    if not kinds:
        raise ConfigError(
            f"{where}: needs root = <ImageFolder tree>, csv = <manifest>, "
            "parquet = [<file globs>] or arrow = <save_to_disk folder>"
        )
    tables = _table_keys(entry, base, where)
    if tables and len(kinds) > 1:
        raise ConfigError(f"{where}: give one of root/csv, parquet or arrow; got {kinds}")
    csv = (base / entry["csv"]).resolve() if "csv" in entry else None
    if "root" in entry:
        root = (base / entry["root"]).resolve()
    else:
        root = csv.parent if csv is not None else tables.get("arrow") or base.resolve()
    classes = entry.get("classes")
    metadata = entry.get("metadata")
    if metadata is not None and (not isinstance(metadata, str) or not metadata or tables):
        raise ConfigError(
            f"{where}: metadata must be a CSV file (path plus metadata columns) of an "
            "ImageFolder or csv dataset; a Parquet or Arrow split's own columns are its "
            f"metadata; got {metadata!r}"
        )
    links = entry.get("link_roots", [])
    if not isinstance(links, list) or not all(isinstance(p, str) for p in links):
        raise ConfigError(f"{where}: link_roots must be a list of folder paths, got {links!r}")
    max_pixels = entry.get("max_pixels", DEFAULT_MAX_PIXELS)
    if type(max_pixels) is not int or not 1 <= max_pixels <= MAX_PIXELS_CAP:
        raise ConfigError(
            f"{where}: max_pixels must be a whole number from 1 to {MAX_PIXELS_CAP} "
            f"(the largest image the decoder opens), got {max_pixels!r}"
        )
    return DatasetSpec(
        name=name,
        root=root,
        csv=csv,
        classes=tuple(str(c) for c in classes) if classes is not None else None,
        link_roots=tuple((base / p).resolve() for p in links),
        max_pixels=max_pixels,
        metadata=(base / metadata).resolve() if metadata is not None else None,
        **tables,
    )


def _table_keys(entry: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    """The Parquet/Arrow keys of a dataset entry, checked, with paths made absolute."""
    out: dict[str, Any] = {}
    for key in ("image_column", "label_column"):
        if key in entry:
            if "parquet" not in entry and "arrow" not in entry:
                raise ConfigError(f"{where}: {key} applies only to parquet or arrow datasets")
            if not isinstance(entry[key], str) or not entry[key]:
                raise ConfigError(f"{where}: {key} must be a column name, got {entry[key]!r}")
            out[key] = entry[key]
    if "parquet" in entry:
        globs = entry["parquet"]
        globs = [globs] if isinstance(globs, str) else globs
        if not isinstance(globs, list) or not globs or not all(isinstance(g, str) for g in globs):
            raise ConfigError(
                f'{where}: parquet must be a list of file globs, e.g. ["data/test-*.parquet"]'
            )
        out["parquet"] = tuple(str(base.resolve() / g) for g in globs)
    if "arrow" in entry:
        if not isinstance(entry["arrow"], str):
            raise ConfigError(
                f"{where}: arrow must be a save_to_disk folder, got {entry['arrow']!r}"
            )
        out["arrow"] = (base / entry["arrow"]).resolve()
    return out
