"""The key of an evaluation: a hash of everything its results depend on.

It covers the weights file's bytes, the dataset's file list with sizes and mtimes, the classes,
the transform, how the model is built and the layer whose maps are stored: any change gives a
new result folder, and a second start on unchanged inputs opens the stored one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from core.data.datasets import ImageDataset
from core.data.models import LoadedModel

__all__ = ["evaluation_key", "file_digest"]

#: Bump when the stored results change meaning, so old folders are not reused.
CACHE_VERSION = "2"


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def evaluation_key(model: LoadedModel, dataset: ImageDataset, map_layer: str | None = None) -> str:
    """The cache key of ``model``'s predictions on ``dataset``."""
    spec = model.spec
    weights = spec.weights if spec.weights is not None else spec.module
    assert weights is not None
    parts = [
        CACHE_VERSION,
        file_digest(weights),
        dataset.fingerprint(),
        repr(model.transform),
        repr((spec.architecture, spec.factory, spec.timm, sorted(spec.factory_kwargs.items()))),
        repr((spec.channels, spec.input_size, spec.mean, spec.std)),
        f"maps:{map_layer}",
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
