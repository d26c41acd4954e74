"""The results store: evaluations streamed to disk and memory-mapped back."""

from core.results.store import (
    BatchScores,
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
]
