"""One call from config entries to a (cached) evaluation."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

from core.cache import PredictionCache, evaluation_key
from core.datasets import ImageDataset
from core.errors import ClassCountMismatchError
from core.models import LoadedModel
from core.predictions import Evaluation, Progress, predict

__all__ = ["EvaluationJob", "check_classes", "evaluate"]


def check_classes(model: LoadedModel, dataset: ImageDataset) -> None:
    """Raise :class:`ClassCountMismatchError` unless model outputs and dataset classes agree."""
    if model.num_classes != len(dataset.classes):
        shown = ", ".join(dataset.classes[:12]) + (" ..." if len(dataset.classes) > 12 else "")
        raise ClassCountMismatchError(
            f"model {model.name!r} outputs {model.num_classes} classes but dataset "
            f"{dataset.name!r} has {len(dataset.classes)} ({shown})"
        )


def evaluate(
    model: LoadedModel,
    dataset: ImageDataset,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    num_workers: int | None = None,
) -> Evaluation:
    """Predictions of ``model`` on ``dataset``, from ``cache_dir`` when nothing changed."""
    check_classes(model, dataset)
    key = evaluation_key(model, dataset)
    cache = PredictionCache(cache_dir / "predictions") if cache_dir is not None else None
    if cache is not None and (hit := cache.load(key)) is not None:
        if progress is not None:
            progress(len(dataset), len(dataset))
        return hit
    result = predict(model, dataset, num_workers=num_workers, progress=progress)
    result = replace(result, fingerprint=key, meta={"model": model.name, "dataset": dataset.name})
    if cache is not None:
        cache.save(key, result)
    return result


class EvaluationJob:
    """:func:`evaluate` running in a background thread, with its progress readable any time.

    Lets a UI show one progress bar to every viewer waiting for the same evaluation.
    """

    def __init__(
        self, model: LoadedModel, dataset: ImageDataset, cache_dir: Path | None = None
    ) -> None:
        self.done, self.total = 0, len(dataset)
        self._future: Future[Evaluation] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(model, dataset, cache_dir), name="evaluation", daemon=True
        )
        self._thread.start()

    def _run(self, model: LoadedModel, dataset: ImageDataset, cache_dir: Path | None) -> None:
        try:
            self._future.set_result(evaluate(model, dataset, cache_dir, self._progress))
        except BaseException as exc:  # handed to whoever asks for the result
            self._future.set_exception(exc)

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    @property
    def finished(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> Evaluation:
        """Wait for the evaluation; re-raises its error."""
        return self._future.result(timeout)
