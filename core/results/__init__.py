"""The results store: evaluations streamed to disk and memory-mapped back."""

from core.results.store import (
    BatchScores,
    DiskFullError,
    Results,
    ResultWriter,
    SkippedFile,
    StoreError,
    StoreWriteError,
    load_derived,
    open_results,
    save_derived,
)

__all__ = [
    "BatchScores",
    "DiskFullError",
    "ResultWriter",
    "Results",
    "SkippedFile",
    "StoreError",
    "StoreWriteError",
    "load_derived",
    "open_results",
    "save_derived",
]
