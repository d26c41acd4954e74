"""core: the library behind the dashboard (loading, predictions, metrics, CAMs, storage).

Never imports streamlit; everything the dashboard shows is computed here.
"""

from core.analysis.metrics import (
    accuracy,
    block_classes,
    block_sums,
    cell_rows,
    confusion_matrix,
    focus_classes,
    most_confused_classes,
    per_class_metrics,
    top_confused_pairs,
)
from core.config import DatasetSpec, ModelSpec, ProjectConfig, load_config
from core.data.datasets import ImageDataset, dataset_key, load_image, load_tensor, open_dataset
from core.data.models import LoadedModel, architectures, load_model
from core.errors import (
    ClassCountMismatchError,
    ConfigError,
    DatasetError,
    ModelLoadError,
    UserFacingError,
)
from core.notes import Note, NotesError, NotesStore
from core.results import Results, SkippedFile, StoreError, open_results
from core.results.evaluate import EvaluationJob, check_classes, evaluate
from core.results.local_engine import predict

__all__ = [
    "ClassCountMismatchError",
    "ConfigError",
    "DatasetError",
    "DatasetSpec",
    "EvaluationJob",
    "ImageDataset",
    "LoadedModel",
    "ModelLoadError",
    "ModelSpec",
    "Note",
    "NotesError",
    "NotesStore",
    "ProjectConfig",
    "Results",
    "SkippedFile",
    "StoreError",
    "UserFacingError",
    "accuracy",
    "architectures",
    "block_classes",
    "block_sums",
    "cell_rows",
    "check_classes",
    "confusion_matrix",
    "dataset_key",
    "evaluate",
    "focus_classes",
    "load_config",
    "load_image",
    "load_model",
    "load_tensor",
    "most_confused_classes",
    "open_dataset",
    "open_results",
    "per_class_metrics",
    "predict",
    "top_confused_pairs",
]
