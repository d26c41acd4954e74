"""The key of an evaluation: a hash of everything its results depend on.

It covers the weights file's bytes, the dataset's file list with sizes and mtimes, the classes,
how the model entry builds and preprocesses (as configured), whether maps are stored and at
which configured layer, whether embeddings are stored, and the versions of the libraries that
turn that configuration into a transform and a model. Any change gives a new result folder; a
second start on unchanged inputs opens the stored one. Computing it imports neither torch nor
the model.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

from core.config import PREPROCESSING_KEYS, ModelSpec
from core.data.datasets import ImageDataset

__all__ = ["evaluation_key", "file_digest"]

#: Bump when the stored results change meaning (or the default map layer rule changes), so
#: old folders are not reused.
CACHE_VERSION = "3"


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def evaluation_key(
    spec: ModelSpec, dataset: ImageDataset, maps: bool = True, embeddings: bool = True
) -> str:
    """The cache key of model entry ``spec``'s results on ``dataset``.

    ``spec`` may be the entry as configured or as loaded (timm fills in the preprocessing the
    entry leaves unset): both give the same key, since what timm fills in follows from the
    timm model name and timm's version, which are in the key.
    """
    weights = spec.weights if spec.weights is not None else spec.module
    assert weights is not None
    configured = {
        key: getattr(spec, key)
        for key in PREPROCESSING_KEYS
        if spec.timm is None or key in spec.explicit
    }
    libraries = ["torch", "torchvision"] + (["timm"] if spec.timm else [])
    parts = [
        CACHE_VERSION,
        file_digest(weights),
        dataset.fingerprint(),
        repr((spec.architecture, spec.factory, spec.timm, sorted(spec.factory_kwargs.items()))),
        repr((spec.channels, sorted(configured.items()))),
        f"maps:{maps and spec.maps}:{spec.layer}",
        f"embeddings:{embeddings and spec.embeddings}",
        repr([(name, metadata.version(name)) for name in libraries]),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
