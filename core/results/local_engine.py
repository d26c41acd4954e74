"""The in-process evaluation engine: batched inference streamed into a result folder.

Each batch is decoded, run through the model (with the predicted- and true-class Grad-CAM at
the target layer when maps are on, and the classifier head's input as the image's embedding
when the writer has an embeddings column: one forward pass serves all three; the image's
properties are measured from the same decoded pixels when it has a properties column) and
written to a
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
    measure = writer.properties is not None
    data = dataset.with_transform(model.resize, model.spec.channels, True, measure)
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
    if writer.embedding_dim is not None:
        forward = _with_embeddings(model, forward)
    done, total = writer.done_count, len(data)
    for batch_indices, batch_labels, images, failed, properties in loader:
        for sample in failed:
            writer.skip(sample.index, data.samples[sample.index][0], sample.error or "")
        if batch_indices:
            labels = torch.tensor(batch_labels)
            inputs = model.normalize(_to_device(images, model.device))
            logits, maps, embeddings = forward(inputs, labels)
            rows = np.asarray(batch_indices)
            scores = scores_from_logits(rows, labels, logits, maps, embeddings, properties)
            writer.write(scores)
        done += len(batch_indices) + len(failed)
        if progress is not None:
            progress(done, total)


Outputs = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]
Forward = Callable[[torch.Tensor, torch.Tensor], Outputs]
"""(inputs, labels) → logits, raw maps or None, embeddings or None (all on the CPU)."""


def _forward(model: LoadedModel) -> Forward:
    def run(inputs: torch.Tensor, labels: torch.Tensor) -> Outputs:
        with torch.inference_mode():
            return model.module(inputs).float().cpu(), None, None

    return run


def _forward_with_maps(model: LoadedModel, layer: str) -> Forward:
    from core.explain.cam import evaluation_maps

    def run(inputs: torch.Tensor, labels: torch.Tensor) -> Outputs:
        logits, maps = evaluation_maps(model.module, inputs, labels.to(inputs.device), layer)
        return logits.float().cpu(), maps.cpu(), None

    return run


def _with_embeddings(model: LoadedModel, forward: Forward) -> Forward:
    """``forward`` that also returns the head's input of the same pass, projected (None where
    the model has no Linear head: then the column stays zeros)."""
    from core.explain.embeddings import tapped_head

    def run(inputs: torch.Tensor, labels: torch.Tensor) -> Outputs:
        with tapped_head(model.module) as tap:
            logits, maps, _ = forward(inputs, labels)
        embeddings = None if tap is None or tap.value is None else tap.embeddings().cpu()
        return logits, maps, embeddings

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


Batch = tuple[list[int], list[int], torch.Tensor, list[Sample], np.ndarray | None]


def _collate(batch: Sequence[Sample]) -> Batch:
    good = [s for s in batch if s.image is not None]
    failed = [s for s in batch if s.image is None]
    images = torch.stack([s.image for s in good]) if good else torch.empty(0)  # type: ignore[misc]
    measured = [s.properties for s in good if s.properties is not None]
    properties = np.stack(measured) if good and len(measured) == len(good) else None
    return [s.index for s in good], [s.label for s in good], images, failed, properties


def _to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last)
