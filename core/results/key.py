"""The key of an evaluation: a hash of everything its results depend on.

It covers the weights file's bytes (an ``hf`` folder's config, image processor config and
weights), the dataset's file list with sizes and mtimes, the classes, how the model entry builds
and preprocesses (as configured), whether maps are stored and at which configured layer, whether
embeddings are stored, and the versions of the libraries that turn that configuration into a
transform and a model. Any change gives a new result folder; a second start on unchanged inputs
opens the stored one. Computing it imports neither torch nor the model.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

from core.config import PREPROCESSING_KEYS, ModelSpec
from core.data.datasets import ImageDataset

__all__ = ["evaluation_key", "file_digest", "hf_files"]

#: Bump when the stored results change meaning (or the default map layer rule changes), so
#: old folders are not reused.
CACHE_VERSION = "4"


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hf_files(folder: Path) -> list[Path]:
    """The files of a ``save_pretrained`` folder that a model's results depend on: its config,
    image processor config and weights (not a README or training arguments); raises OSError
    when the folder cannot be listed."""
    names = sorted(p.name for p in folder.iterdir())
    wanted = ("config.json", "preprocessor_config.json", "model.safetensors.index.json")
    weights = [
        n
        for n in names
        if n.endswith(".safetensors") or (n.startswith("pytorch_model") and n.endswith(".bin"))
    ]
    return [folder / n for n in names if n in wanted or n in weights]


def _weights_digest(spec: ModelSpec) -> str:
    if spec.hf is not None:
        files = hf_files(spec.hf)
        return repr([(f.name, file_digest(f)) for f in files])
    weights = spec.weights if spec.weights is not None else spec.module
    assert weights is not None
    return file_digest(weights)


def evaluation_key(
    spec: ModelSpec, dataset: ImageDataset, maps: bool = True, embeddings: bool = True
) -> str:
    """The cache key of model entry ``spec``'s results on ``dataset``.

    ``spec`` may be the entry as configured or as loaded (timm or an ``hf`` folder's image
    processor fills in the preprocessing the entry leaves unset): both give the same key, since
    what is filled in follows from the timm model name or the folder's files and the library
    versions, which are in the key.
    """
    filled = spec.timm is not None or spec.hf is not None
    configured = {
        key: getattr(spec, key) for key in PREPROCESSING_KEYS if not filled or key in spec.explicit
    }
    libraries = ["torch", "torchvision"] + (["timm"] if spec.timm else [])
    libraries += ["transformers", "timm"] if spec.hf is not None else []
    parts = [
        CACHE_VERSION,
        _weights_digest(spec),
        dataset.fingerprint(),
        repr((spec.architecture, spec.factory, spec.timm, sorted(spec.factory_kwargs.items()))),
        repr((spec.channels, sorted(configured.items()))),
        f"maps:{maps and spec.maps}:{spec.layer}",
        f"embeddings:{embeddings and spec.embeddings}",
        repr([(name, metadata.version(name)) for name in libraries]),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
