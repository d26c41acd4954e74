"""One call from a model and a dataset to a result folder: cached, resumable, streamed.

:func:`stored_result` finds the results of unchanged inputs without loading the model or
importing torch, so reopening a million-image evaluation costs a listing and a stat per file.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import ModelSpec
from core.data.image_dataset import ImageDataset
from core.data.properties import PROPERTIES
from core.errors import ClassCountMismatchError
from core.results.key import evaluation_key
from core.results.store import Results, ResultWriter, StoreError, open_results, write_error

if TYPE_CHECKING:
    from core.data.models import LoadedModel
    from core.results.local_engine import Progress

__all__ = [
    "EvaluationJob",
    "Lookup",
    "check_classes",
    "evaluate",
    "lookup",
    "map_layer",
    "stored_result",
]


def check_classes(model: LoadedModel, dataset: ImageDataset) -> None:
    """Raise :class:`ClassCountMismatchError` unless model outputs and dataset classes agree."""
    if model.num_classes != len(dataset.classes):
        shown = ", ".join(dataset.classes[:12]) + (" ..." if len(dataset.classes) > 12 else "")
        raise ClassCountMismatchError(
            f"model {model.name!r} outputs {model.num_classes} classes but dataset "
            f"{dataset.name!r} has {len(dataset.classes)} ({shown})"
        )


def map_layer(model: LoadedModel) -> tuple[str, tuple[int, int]] | None:
    """The layer whose Grad-CAM the evaluation stores, and its map size; None if maps are off
    (``maps = false``) or the model has no spatial layer (e.g. a flat MLP)."""
    from core.explain.cam import candidate_layers, find_target_layer

    if not model.spec.maps:
        return None
    try:
        name = model.spec.layer or find_target_layer(model.module, model.input_shape)
    except ValueError:
        return None
    for info in candidate_layers(model.module, model.input_shape):
        if info.name == name:
            return name, (int(info.shape[-2]), int(info.shape[-1]))
    return None


def _embedding_dim(model: LoadedModel) -> int | None:
    """Width of the stored embeddings; None if they are off (``embeddings = false``) or the
    model has no Linear head to take them from."""
    from core.explain.embeddings import EMBEDDING_DIM, head_module

    if not model.spec.embeddings or head_module(model.module) is None:
        return None
    return EMBEDDING_DIM


@dataclass(frozen=True)
class Lookup:
    """Where the results of some inputs live, and whether they are complete there."""

    key: str  # the evaluation key of the inputs
    folder: Path | None  # None: no cache, a scratch folder is used
    result: Results | None  # the stored results, when unchanged inputs made them


def lookup(
    spec: ModelSpec,
    dataset: ImageDataset,
    cache_dir: Path | None = None,
    out: Path | None = None,
    maps: bool = True,
    embeddings: bool = True,
) -> Lookup:
    """Find the result folder of model entry ``spec`` on ``dataset`` (see :func:`evaluate` for
    where it is looked for). Loads no model; costs a stat of every file and a hash of the
    weights, so a caller that goes on to :func:`evaluate` hands it over (``found=``)."""
    if spec.results and out is None:  # predictions made elsewhere (--out DIR/)
        from core.results.reconcile import find_result

        made = find_result(spec.results, dataset)
        if made is not None:
            return Lookup(made.fingerprint, made.folder, made)
    key = evaluation_key(spec, dataset, maps, embeddings)
    folder = out or (cache_dir / "results" / key if cache_dir is not None else None)
    if folder is None:
        return Lookup(key, None, None)
    try:
        hit = open_results(folder)
    except StoreError:  # nothing there yet, unfinished, damaged: (re)compute
        return Lookup(key, folder, None)
    return Lookup(key, folder, hit if hit.fingerprint == key else None)


def stored_result(
    spec: ModelSpec,
    dataset: ImageDataset,
    cache_dir: Path | None = None,
    out: Path | None = None,
    maps: bool = True,
    embeddings: bool = True,
) -> Results | None:
    """The stored results of model entry ``spec`` on ``dataset`` if unchanged inputs made
    them, else None (:func:`lookup`'s result)."""
    return lookup(spec, dataset, cache_dir, out, maps, embeddings).result


def evaluate(
    model: LoadedModel,
    dataset: ImageDataset,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    num_workers: int | None = None,
    out: Path | None = None,
    maps: bool = True,
    batch_size: int | None = None,
    commit_seconds: float = 2.0,
    engine: Callable[..., None] | None = None,
    found: Lookup | None = None,
    embeddings: bool = True,
    properties: bool = True,
) -> Results:
    """``model``'s results on ``dataset``: read from disk when nothing changed, else computed.

    The result folder is ``out``, else ``cache_dir/results/<key>``, else a temporary folder
    (removed once open); a model entry's ``results`` folders made elsewhere come first. A
    folder left half-way by a killed run is resumed. ``engine`` fills the writer:
    :func:`core.results.local_engine.predict`, or the same signature elsewhere (Ray).
    ``found`` is a :func:`lookup` of the same inputs made just before (not repeated).
    With ``embeddings`` (and the entry's ``embeddings`` on) each image's classifier-head input
    is stored too (:mod:`core.explain.embeddings`); with ``properties`` each image's properties
    (:mod:`core.data.properties`), measured from the decoded pixels. The dataset's metadata
    is saved with a new result (:func:`core.results.columns.save_metadata`). Neither changes
    the evaluation key: a result stored before has no properties.
    """
    check_classes(model, dataset)
    found = found or lookup(model.spec, dataset, cache_dir, out, maps, embeddings)
    key, folder, hit = found.key, found.folder, found.result
    if hit is not None:
        if progress is not None:
            progress(len(dataset), len(dataset))
        return hit
    if engine is None:  # imported here: a stored result needs no torch
        from core.results.local_engine import predict

        engine = predict
    layer = map_layer(model) if maps else None
    embedding_dim = _embedding_dim(model) if embeddings else None
    scratch = folder is None
    try:
        folder = Path(tempfile.mkdtemp(prefix="cam-results-")) if folder is None else folder
    except OSError as exc:
        raise write_error(exc, Path(tempfile.gettempdir()), "a scratch folder in") from None
    try:
        meta: dict[str, Any] = {
            "model": model.name,
            "dataset": dataset.name,
            "root": str(dataset.root),
        }
        if layer is not None:  # and the size they are drawn at, so a gallery needs no model
            meta.update(map_layer=layer[0], input_size=list(model.spec.input_size))
        with ResultWriter(
            folder,
            dataset.samples,
            dataset.classes,
            key,
            meta,
            map_shape=layer[1] if layer else None,
            commit_seconds=commit_seconds,
            durable=not scratch,
            embedding_dim=embedding_dim,
            properties=PROPERTIES if properties else None,
        ) as writer:
            engine(
                model,
                dataset,
                writer,
                batch_size=batch_size,
                num_workers=num_workers,
                progress=progress,
                maps_layer=layer[0] if layer else None,
            )
            result = writer.finish()
        from core.results.columns import save_metadata

        save_metadata(result, dataset)
        return result
    finally:
        if scratch:
            shutil.rmtree(folder, ignore_errors=True)  # open memory maps keep their data


class EvaluationJob:
    """:func:`evaluate` running in a background thread, with its progress readable any time.

    Lets a UI show one progress bar to every viewer waiting for the same evaluation.
    """

    def __init__(
        self,
        model: LoadedModel,
        dataset: ImageDataset,
        cache_dir: Path | None = None,
        found: Lookup | None = None,
    ) -> None:
        self.done, self.total = 0, len(dataset)
        self._future: Future[Results] = Future()
        self._thread = threading.Thread(
            target=self._run,
            args=(model, dataset, cache_dir, found),
            name="evaluation",
            daemon=True,
        )
        self._thread.start()

    @classmethod
    def done_with(cls, result: Results) -> EvaluationJob:
        """A job whose results are already there (stored results of unchanged inputs)."""
        job = cls.__new__(cls)
        job.done = job.total = len(result.predictions)
        job._future = Future()
        job._future.set_result(result)
        return job

    def _run(
        self,
        model: LoadedModel,
        dataset: ImageDataset,
        cache_dir: Path | None,
        found: Lookup | None,
    ) -> None:
        try:
            result = evaluate(model, dataset, cache_dir, self._progress, found=found)
            self._future.set_result(result)
        except BaseException as exc:  # handed to whoever asks for the result
            self._future.set_exception(exc)

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    @property
    def finished(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> Results:
        """Wait for the evaluation; re-raises its error."""
        return self._future.result(timeout)
