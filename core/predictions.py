"""Batched inference over a test set into a predictions table (one row per image)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from core.datasets import ImageDataset, Sample
from core.models import LoadedModel

__all__ = ["COLUMNS", "Evaluation", "Progress", "SkippedFile", "predict"]

#: Columns of the predictions table, in order. ``true``/``pred`` are class indices.
COLUMNS = ("index", "path", "true", "pred", "confidence", "true_prob", "loss", "probs")

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after every batch."""


@dataclass(frozen=True)
class SkippedFile:
    """A test image that could not be read, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Evaluation:
    """The model's predictions on a test set, plus the files it had to skip."""

    predictions: pd.DataFrame
    classes: tuple[str, ...]
    skipped: tuple[SkippedFile, ...] = ()
    fingerprint: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def predict(
    model: LoadedModel,
    dataset: ImageDataset,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Run ``model`` over every image of ``dataset``; unreadable files are skipped and listed.

    Images are decoded and resized to uint8, normalisation runs once per batch. With
    ``num_workers=0`` (the default on the CPU) decoding and the model take turns, each with all
    the cores; loader processes (the default on a GPU) decode while the model runs.
    """
    data = dataset.with_transform(model.resize, model.spec.channels, tensors=True)
    loader = DataLoader(
        data,
        batch_size=batch_size or model.spec.batch_size,
        num_workers=default_workers(model.device) if num_workers is None else num_workers,
        collate_fn=_collate,
        pin_memory=model.device.type == "cuda",
    )
    indices: list[int] = []
    labels: list[int] = []
    logits: list[torch.Tensor] = []
    skipped: list[SkippedFile] = []
    normalize = model.normalize
    with torch.inference_mode():
        for batch_indices, batch_labels, images, failed in loader:
            skipped += [SkippedFile(data.samples[s.index][0], s.error or "") for s in failed]
            if batch_indices:
                inputs = normalize(_to_device(images, model.device))
                logits.append(model.module(inputs).float().cpu())
                indices += batch_indices
                labels += batch_labels
            if progress is not None:
                progress(len(indices) + len(skipped), len(data))
    table = _rows(data, indices, labels, torch.cat(logits)) if logits else _empty_table()
    return Evaluation(table, tuple(dataset.classes), tuple(skipped))


def default_workers(device: torch.device | str = "cpu") -> int:
    """Loader processes (0 = this process decodes each batch, then runs the model on it).

    On the CPU the model's intra-op threads already use the cores: decoding at the same time,
    in processes or in a thread, only competes with them (measured on the digits sample: a
    prefetch thread was no faster, two decoding threads slower). A GPU leaves the cores free.
    """
    cores = os.cpu_count() or 1
    spare = cores - 1 if torch.device(device).type == "cuda" else cores - torch.get_num_threads()
    return max(0, min(4, spare))


def _collate(batch: Sequence[Sample]) -> tuple[list[int], list[int], torch.Tensor, list[Sample]]:
    good = [s for s in batch if s.image is not None]
    failed = [s for s in batch if s.image is None]
    images = torch.stack([s.image for s in good]) if good else torch.empty(0)  # type: ignore[misc]
    return [s.index for s in good], [s.label for s in good], images, failed


def _to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last)


def _rows(
    data: ImageDataset, indices: list[int], labels: list[int], logits: torch.Tensor
) -> pd.DataFrame:
    log_probs = F.log_softmax(logits, dim=1)
    probs = log_probs.exp()
    true = torch.tensor(labels)
    confidence, pred = probs.max(dim=1)
    true_log_prob = log_probs.gather(1, true[:, None])[:, 0]
    return pd.DataFrame(
        {
            "index": indices,
            "path": [data.samples[i][0] for i in indices],
            "true": true.numpy(),
            "pred": pred.numpy(),
            "confidence": confidence.numpy(),
            "true_prob": true_log_prob.exp().numpy(),
            "loss": (-true_log_prob).numpy(),
            "probs": list(probs.numpy().astype(np.float32)),
        }
    )


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
