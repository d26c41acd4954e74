"""The results store: evaluations streamed to disk and memory-mapped back."""

from core.results.scores import BatchScores, scores_from_logits
from core.results.store import Results, ResultWriter, SkippedFile, StoreError, open_results

__all__ = [
    "BatchScores",
    "ResultWriter",
    "Results",
    "SkippedFile",
    "StoreError",
    "open_results",
    "scores_from_logits",
]
