"""The in-process evaluation engine: batched inference streamed into a result folder.

Each batch is decoded, run through the model (with the predicted- and true-class Grad-CAM at
the target layer when maps are on: one forward pass serves both) and written to a
:class:`~core.results.store.ResultWriter` before the next one, so memory does not grow with the
size of the set, and a killed run resumes where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core.data.datasets import ImageDataset
from core.data.images import Sample
from core.data.models import LoadedModel
from core.results.scores import scores_from_logits
from core.results.store import ResultWriter

__all__ = ["Progress", "default_workers", "predict"]

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after every batch."""


def predict(
    model: LoadedModel,
    dataset: ImageDataset,
    writer: ResultWriter,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
    maps_layer: str | None = None,
) -> None:
    """Run ``model`` over the rows of ``dataset`` that ``writer`` still needs.

    Unreadable files are recorded as skipped with their reason. With ``maps_layer`` the raw
    Grad-CAM of the predicted and the true class (runner-up when right) at that layer is stored
    too. With ``num_workers=0`` (the default on the CPU) decoding and the model take turns, each
    with all the cores; loader processes (the default on a GPU) decode while the model runs.
    """
    data = dataset.with_transform(model.resize, model.spec.channels, tensors=True)
    todo = writer.todo()
    loader: DataLoader[Sample] = DataLoader(
        cast("Dataset[Sample]", data),  # a map-style dataset; torch's stubs want its base class
        batch_size=batch_size or model.spec.batch_size,
        sampler=todo.tolist(),
        num_workers=default_workers(model.device) if num_workers is None else num_workers,
        collate_fn=_collate,
        pin_memory=model.device.type == "cuda",
    )
    forward = _forward_with_maps(model, maps_layer) if maps_layer else _forward(model)
    done, total = writer.done_count, len(data)
    for batch_indices, batch_labels, images, failed in loader:
        for sample in failed:
            writer.skip(sample.index, data.samples[sample.index][0], sample.error or "")
        if batch_indices:
            labels = torch.tensor(batch_labels)
            inputs = model.normalize(_to_device(images, model.device))
            logits, maps = forward(inputs, labels)
            writer.write(scores_from_logits(np.asarray(batch_indices), labels, logits, maps))
        done += len(batch_indices) + len(failed)
        if progress is not None:
            progress(done, total)


Forward = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def _forward(model: LoadedModel) -> Forward:
    def run(inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, None]:
        with torch.inference_mode():
            return model.module(inputs).float().cpu(), None

    return run


def _forward_with_maps(model: LoadedModel, layer: str) -> Forward:
    from core.explain.cam import evaluation_maps

    def run(inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, maps = evaluation_maps(model.module, inputs, labels.to(inputs.device), layer)
        return logits.float().cpu(), maps.cpu()

    return run


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
