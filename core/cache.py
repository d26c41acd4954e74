"""On-disk cache of evaluations, keyed by what the predictions depend on.

The key hashes the weights file's bytes, the dataset's file list with sizes and mtimes, the
classes, the transform and how the model is built: any change recomputes, and a second start
on unchanged inputs loads instantly. Files are written atomically (temp file + rename), so an
interrupted run never leaves a damaged entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from core.datasets import ImageDataset
from core.models import LoadedModel
from core.predictions import Evaluation, SkippedFile

__all__ = ["PredictionCache", "evaluation_key", "file_digest"]

#: Bump when the predictions table changes meaning, so old entries are not reused.
CACHE_VERSION = "1"


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def evaluation_key(model: LoadedModel, dataset: ImageDataset) -> str:
    """The cache key of ``model``'s predictions on ``dataset``."""
    spec = model.spec
    weights = spec.weights if spec.weights is not None else spec.module
    assert weights is not None
    parts = [
        CACHE_VERSION,
        file_digest(weights),
        dataset.fingerprint(),
        repr(model.transform),
        repr((spec.architecture, spec.factory, sorted(spec.factory_kwargs.items()))),
        repr((spec.channels, spec.input_size, spec.mean, spec.std)),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class PredictionCache:
    """A folder of ``<key>.parquet`` tables with ``<key>.json`` metadata."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def load(self, key: str) -> Evaluation | None:
        """The cached evaluation for ``key``, or None (also for an unreadable entry)."""
        table_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            table = pd.read_parquet(table_path)
            table["probs"] = [np.asarray(p, dtype=np.float32) for p in table["probs"]]
            skipped = tuple(SkippedFile(s["path"], s["reason"]) for s in meta["skipped"])
            return Evaluation(table, tuple(meta["classes"]), skipped, key, meta.get("meta", {}))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # damaged entry
            return None

    def save(self, key: str, evaluation: Evaluation) -> None:
        """Store ``evaluation`` under ``key`` atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        table_path, meta_path = self._paths(key)
        meta = {
            "classes": list(evaluation.classes),
            "skipped": [{"path": s.path, "reason": s.reason} for s in evaluation.skipped],
            "meta": evaluation.meta,
        }
        table = evaluation.predictions.copy()
        table["probs"] = [np.asarray(p).tolist() for p in table["probs"]]
        _atomic_write(table_path, lambda tmp: table.to_parquet(tmp, index=False))
        _atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta)))

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.parquet", self.folder / f"{key}.json"


def _atomic_write(path: Path, write: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)  # type: ignore[operator]
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
