"""The Ray Data evaluation engine: the same results store, computed on a Ray cluster.

Pipeline: the rows the writer still needs (row, path, label) → decode and resize in
``map_batches`` tasks on any node's CPUs (a file that cannot be read becomes a row with its
reason, never a failed task) → an actor pool holding the model (one GPU per actor when the
cluster has GPUs, a fraction of a CPU otherwise, so the decode tasks always get CPUs) → logits
and raw maps back to this process, which writes them with the same
:func:`~core.results.scores.scores_from_logits` and :class:`ResultWriter` as the in-process
engine. Only this process writes the store; the workers need the images and the model files.

``ray`` is imported inside the functions here and nowhere else in ``core``: the dashboard and
the in-process engine never load it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from core.config import ModelSpec
from core.data.image_dataset import ImageDataset
from core.data.models import LoadedModel, ResizeTo, load_model
from core.data.parquet import TableDataset, TableReader
from core.data.properties import PROPERTIES
from core.explain.embeddings import EMBEDDING_DIM, EmbeddingTap, tapped_head
from core.results.local_engine import Progress
from core.results.scores import scores_from_logits
from core.results.store import ResultWriter

if TYPE_CHECKING:
    import ray.data

__all__ = ["ModelActor", "Placement", "decode_batch", "local_init_args", "predict"]

ACTOR_CPUS = 0.5  # a CPU-only actor's reservation: the other half-core stays for decode tasks
OBJECT_STORE_BYTES = 512 * 2**20  # a local Ray's object store: enough for a few hundred batches


@dataclass(frozen=True)
class Placement:
    """How many model actors run, and what each one reserves."""

    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    threads: int  # torch intra-op threads per CPU actor
    nodes: int
    cpus: float
    gpus: float

    @classmethod
    def for_cluster(cls, nodes: list[dict[str, Any]]) -> Placement:
        """One actor per GPU; without GPUs one per node, using that node's cores."""
        alive = [n["Resources"] for n in nodes if n.get("Alive")]
        cpus = sum(r.get("CPU", 0.0) for r in alive)
        gpus = sum(r.get("GPU", 0.0) for r in alive)
        if gpus >= 1:
            return cls(int(gpus), 1.0, 1.0, 1, len(alive), cpus, gpus)
        threads = max(1, int(min((r.get("CPU", 1.0) for r in alive), default=1)))
        return cls(max(1, len(alive)), 0.0, ACTOR_CPUS, threads, len(alive), cpus, gpus)

    def describe(self) -> str:
        kind = "GPU" if self.gpus_per_actor else "CPU"
        return (
            f"ray: {self.nodes} node(s), {self.cpus:g} CPUs, {self.gpus:g} GPUs; "
            f"{self.actors} model actor(s) on {kind}"
        )


def predict(
    model: LoadedModel,
    dataset: ImageDataset,
    writer: ResultWriter,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
    maps_layer: str | None = None,
    address: str | None = None,
    actor: type[ModelActor] | None = None,
) -> None:
    """:func:`core.results.local_engine.predict` on Ray: the rows ``writer`` still needs.

    ``address`` (else ``RAY_ADDRESS``) joins a running cluster; without one a local Ray sized to
    this machine is started and stopped again (a Ray this process already started is reused).
    ``num_workers`` is ignored (Ray schedules the decode tasks); ``actor`` replaces the model
    actor class (tests inject faults with it).
    """
    import ray

    owned = _connect(address or os.environ.get("RAY_ADDRESS") or None)
    try:
        placement = Placement.for_cluster(ray.nodes())
        print(placement.describe(), file=sys.stderr)
        size = batch_size or model.spec.batch_size
        shape = writer.map_shape if maps_layer else None
        embed = writer.embedding_dim is not None
        todo = writer.todo()
        stream = _pipeline(
            model.spec,
            dataset,
            todo,
            size,
            maps_layer,
            shape,
            placement,
            actor,
            embed,
            writer.properties is not None,
        )
        done, total = writer.done_count, len(dataset)
        for table in stream:
            done += _write(writer, dataset, table, shape)
            if progress is not None:
                progress(done, total)
    finally:
        if owned:
            ray.shutdown()


def _connect(address: str | None) -> bool:
    """Join ``address``, reuse this process's Ray, or start a local one; True if we connected."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(**local_init_args())
    return True


def local_init_args() -> dict[str, Any]:
    """``ray.init`` arguments for a private Ray on this machine: every core, no dashboard."""
    return {
        "num_cpus": os.cpu_count() or 1,
        "include_dashboard": False,
        "object_store_memory": OBJECT_STORE_BYTES,
        "logging_level": logging.WARNING,
    }


def _pipeline(
    spec: ModelSpec,
    dataset: ImageDataset,
    todo: np.ndarray,
    batch_size: int,
    layer: str | None,
    map_shape: tuple[int, int] | None,
    placement: Placement,
    actor: type[ModelActor] | None,
    embeddings: bool = False,
    properties: bool = False,
) -> Iterable[pa.Table]:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    if len(todo) == 0:
        return iter(())
    rows = _manifest(dataset, todo)
    blocks = [rows.slice(i, batch_size) for i in range(0, len(rows), batch_size)]
    decode = partial(
        decode_batch,
        root=str(dataset.root),
        channels=spec.channels,
        size=spec.input_size,
        reader=getattr(dataset, "reader", None),  # a table dataset's (small, picklable)
        properties=properties,
    )
    decoded = ray.data.from_arrow(blocks).map_batches(
        decode, batch_size=batch_size, batch_format="pyarrow"
    )
    scored: ray.data.Dataset = decoded.map_batches(
        actor or ModelActor,
        batch_size=batch_size,
        batch_format="numpy",
        fn_constructor_kwargs={
            "spec": spec,
            "layer": layer,
            "map_shape": map_shape,
            "threads": placement.threads,
            "embeddings": embeddings,
        },
        compute=ray.data.ActorPoolStrategy(size=placement.actors),
        num_gpus=placement.gpus_per_actor,
        num_cpus=placement.cpus_per_actor,
    )  # Ray Data restarts a lost actor and retries its batches (max_restarts=-1 by default)
    return scored.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2)


def _manifest(dataset: ImageDataset, todo: np.ndarray) -> pa.Table:
    paths = [dataset.samples[i][0] for i in todo]
    labels = [dataset.samples[i][1] for i in todo]
    return pa.table(
        {
            "row": pa.array(todo, type=pa.int64()),
            "path": pa.array(paths, type=pa.string()),
            "label": pa.array(labels, type=pa.int64()),
        }
    )


def decode_batch(
    batch: pa.Table,
    root: str,
    channels: int,
    size: tuple[int, int],
    reader: TableReader | None = None,
    properties: bool = False,
) -> dict[str, np.ndarray]:
    """Decode and resize a block of files as :class:`ImageDataset` does (the same call); rows
    of Parquet or Arrow files through their ``reader``.

    Returns row, label, error ("" when read) and image (uint8 [n, C, H, W], zeros where not);
    with ``properties`` also each image's properties (float64 [n, P], NaN where not read).
    """
    samples = list(zip(batch["path"].to_pylist(), batch["label"].to_pylist(), strict=True))
    resize = ResizeTo(size)
    files = (
        ImageDataset("ray", Path(root), samples, [], resize, channels, tensors=True)
        if reader is None
        else TableDataset("ray", Path(root), reader, samples, [], resize, channels, tensors=True)
    )
    files.measure = properties
    images = np.zeros((len(samples), channels, *size), dtype=np.uint8)
    measured = np.full((len(samples), len(PROPERTIES)), np.nan)
    errors = np.full(len(samples), "", dtype=object)
    for i in range(len(samples)):
        sample = files[i]
        if sample.image is None:
            errors[i] = sample.error or "unreadable"
        else:
            images[i] = sample.image.numpy()
            if sample.properties is not None:
                measured[i] = sample.properties
    out = {
        "row": batch["row"].to_numpy(),
        "label": batch["label"].to_numpy(),
        "error": errors,
        "image": images,
    }
    if properties:
        out["properties"] = measured
    return out


class ModelActor:
    """Holds the model (loaded once per actor); a batch of images → logits, raw maps and
    embeddings (the classifier head's input of the same forward pass)."""

    def __init__(
        self,
        spec: ModelSpec,
        layer: str | None,
        map_shape: tuple[int, int] | None,
        threads: int,
        embeddings: bool = False,
    ) -> None:
        self.model = load_model(spec)
        if self.model.device.type == "cpu":
            torch.set_num_threads(threads)
        self.layer = layer
        self.map_shape = map_shape if layer else None
        self.embeddings = embeddings

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        ok = batch["error"] == ""
        n, classes = len(ok), self.model.num_classes
        logits = np.zeros((n, classes), dtype=np.float32)
        maps = None if self.map_shape is None else np.zeros((n, 2, *self.map_shape), np.float32)
        embedded = np.zeros((n, EMBEDDING_DIM), np.float32) if self.embeddings else None
        if ok.any():
            with self._tapped() as tap:
                good_logits, good_maps = self.run(batch["image"][ok], batch["label"][ok])
            logits[ok] = good_logits
            if maps is not None and good_maps is not None:
                maps[ok] = good_maps
            if embedded is not None and tap is not None and tap.value is not None:
                embedded[ok] = tap.embeddings().float().cpu().numpy()
        columns = {
            "row": pa.array(batch["row"], type=pa.int64()),
            "label": pa.array(batch["label"], type=pa.int64()),
            "error": pa.array(batch["error"].tolist(), type=pa.string()),
            "logits": _fixed_lists(logits),
        }
        if maps is not None:
            columns["maps"] = _fixed_lists(maps.reshape(n, -1))
        if embedded is not None:
            columns["embeddings"] = _fixed_lists(embedded)
        if "properties" in batch:  # measured by the decode task: passed through
            columns["properties"] = _fixed_lists(batch["properties"], np.float64)
        return pa.table(columns)

    def _tapped(self) -> AbstractContextManager[EmbeddingTap | None]:
        return tapped_head(self.model.module) if self.embeddings else nullcontext(None)

    def run(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The in-process engine's forward pass on decoded uint8 images."""
        device = self.model.device
        inputs = torch.from_numpy(images).to(device).contiguous(memory_format=torch.channels_last)
        inputs = self.model.normalize(inputs)
        if self.layer is None:
            with torch.inference_mode():
                return self.model.module(inputs).float().cpu().numpy(), None
        from core.explain.cam import evaluation_maps

        target = torch.from_numpy(labels).to(device)
        logits, maps = evaluation_maps(self.model.module, inputs, target, self.layer)
        return logits.float().cpu().numpy(), maps.float().cpu().numpy()


def _fixed_lists(values: np.ndarray, dtype: Any = np.float32) -> pa.FixedSizeListArray:
    flat = np.ascontiguousarray(values, dtype=dtype)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def _write(
    writer: ResultWriter,
    dataset: ImageDataset,
    table: pa.Table,
    map_shape: tuple[int, int] | None,
) -> int:
    """Write one output block to the store; returns how many rows it held."""
    rows = table["row"].to_numpy()
    labels = table["label"].to_numpy()
    errors = np.asarray(table["error"].to_pylist(), dtype=object)
    ok = errors == ""
    for row, reason in zip(rows[~ok], errors[~ok], strict=True):
        writer.skip(int(row), dataset.samples[int(row)][0], str(reason))
    if ok.any():
        logits = _unflatten(table["logits"], (-1,))[ok]
        maps = embeddings = None
        if map_shape is not None:
            maps = torch.from_numpy(_unflatten(table["maps"], (2, *map_shape))[ok])
        if writer.embedding_dim is not None and "embeddings" in table.column_names:
            embeddings = torch.from_numpy(_unflatten(table["embeddings"], (-1,))[ok])
        properties = None
        if writer.properties is not None and "properties" in table.column_names:
            properties = _unflatten(table["properties"], (-1,))[ok].astype(np.float64)
        scores = scores_from_logits(
            rows[ok],
            torch.from_numpy(labels[ok]),
            torch.from_numpy(logits),
            maps,
            embeddings,
            properties,
        )
        writer.write(scores)
    return len(rows)


def _unflatten(column: pa.ChunkedArray, shape: tuple[int, ...]) -> np.ndarray:
    array = column.combine_chunks()
    width = array.type.list_size
    flat = array.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(array), width).reshape(len(array), *shape)
