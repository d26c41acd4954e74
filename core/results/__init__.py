"""The results store: evaluations streamed to disk and memory-mapped back."""

from core.results.scores import BatchScores, scores_from_logits
from core.results.store import (
    Results,
    ResultWriter,
    SkippedFile,
    StoreError,
    load_derived,
    open_results,
    save_derived,
)

__all__ = [
    "BatchScores",
    "ResultWriter",
    "Results",
    "SkippedFile",
    "StoreError",
    "load_derived",
    "open_results",
    "save_derived",
    "scores_from_logits",
]
