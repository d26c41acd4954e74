"""core: the library behind the dashboard (loading, predictions, metrics, CAMs, storage).

Never imports streamlit; everything the dashboard shows is computed here. The names below are
imported on first use (PEP 562), so ``import core`` is instant and a command that only reads
stored results never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.analysis.calibration import reliability
    from core.analysis.embedding_map import result_layout
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
    from core.analysis.patterns import Pattern, Patterns, result_patterns
    from core.analysis.similar import similar_images
    from core.analysis.slice_columns import result_columns
    from core.analysis.slice_finder import find_slices, result_slices
    from core.analysis.slices import Slice, slice_table
    from core.config import DatasetSpec, ModelSpec, ProjectConfig, load_config
    from core.corrections import CorrectionsStore, corrected_true
    from core.data.datasets import ImageDataset, dataset_key, open_dataset
    from core.data.images import load_image, load_tensor
    from core.data.models import LoadedModel, architectures, load_model
    from core.errors import (
        ClassCountMismatchError,
        ConfigError,
        DatasetError,
        ModelLoadError,
        UserFacingError,
    )
    from core.explain.cam import cam, evaluation_maps, grad_cam, grad_cam_pp, saliency
    from core.explain.faithfulness import deletion_insertion, faithfulness, random_maps
    from core.explain.layers import candidate_layers, find_target_layer
    from core.explain.sanity import sanity_check
    from core.findings import Finding, FindingsStore
    from core.notes import Note, NotesError, NotesStore
    from core.results import (
        DiskFullError,
        Results,
        SkippedFile,
        StoreError,
        StoreWriteError,
        open_results,
    )
    from core.results.evaluate import EvaluationJob, check_classes, evaluate
    from core.results.local_engine import predict

#: Each public name and the module that defines it.
_EXPORTS = {
    "ClassCountMismatchError": "core.errors",
    "ConfigError": "core.errors",
    "CorrectionsStore": "core.corrections",
    "DatasetError": "core.errors",
    "DatasetSpec": "core.config",
    "DiskFullError": "core.results",
    "EvaluationJob": "core.results.evaluate",
    "Finding": "core.findings",
    "FindingsStore": "core.findings",
    "ImageDataset": "core.data.datasets",
    "LoadedModel": "core.data.models",
    "ModelLoadError": "core.errors",
    "ModelSpec": "core.config",
    "Note": "core.notes",
    "NotesError": "core.notes",
    "NotesStore": "core.notes",
    "Pattern": "core.analysis.patterns",
    "Patterns": "core.analysis.patterns",
    "ProjectConfig": "core.config",
    "Results": "core.results",
    "Slice": "core.analysis.slices",
    "SkippedFile": "core.results",
    "StoreError": "core.results",
    "StoreWriteError": "core.results",
    "UserFacingError": "core.errors",
    "accuracy": "core.analysis.metrics",
    "architectures": "core.data.models",
    "block_classes": "core.analysis.metrics",
    "block_sums": "core.analysis.metrics",
    "cam": "core.explain.cam",
    "candidate_layers": "core.explain.layers",
    "cell_rows": "core.analysis.metrics",
    "check_classes": "core.results.evaluate",
    "confusion_matrix": "core.analysis.metrics",
    "corrected_true": "core.corrections",
    "dataset_key": "core.data.datasets",
    "deletion_insertion": "core.explain.faithfulness",
    "evaluate": "core.results.evaluate",
    "evaluation_maps": "core.explain.cam",
    "faithfulness": "core.explain.faithfulness",
    "find_slices": "core.analysis.slice_finder",
    "find_target_layer": "core.explain.layers",
    "focus_classes": "core.analysis.metrics",
    "grad_cam": "core.explain.cam",
    "grad_cam_pp": "core.explain.cam",
    "load_config": "core.config",
    "load_image": "core.data.images",
    "load_model": "core.data.models",
    "load_tensor": "core.data.images",
    "most_confused_classes": "core.analysis.metrics",
    "open_dataset": "core.data.datasets",
    "open_results": "core.results",
    "per_class_metrics": "core.analysis.metrics",
    "predict": "core.results.local_engine",
    "random_maps": "core.explain.faithfulness",
    "reliability": "core.analysis.calibration",
    "result_columns": "core.analysis.slice_columns",
    "result_layout": "core.analysis.embedding_map",
    "result_patterns": "core.analysis.patterns",
    "result_slices": "core.analysis.slice_finder",
    "saliency": "core.explain.cam",
    "sanity_check": "core.explain.sanity",
    "similar_images": "core.analysis.similar",
    "slice_table": "core.analysis.slices",
    "top_confused_pairs": "core.analysis.metrics",
}

__all__ = [
    "ClassCountMismatchError",
    "ConfigError",
    "CorrectionsStore",
    "DatasetError",
    "DatasetSpec",
    "DiskFullError",
    "EvaluationJob",
    "Finding",
    "FindingsStore",
    "ImageDataset",
    "LoadedModel",
    "ModelLoadError",
    "ModelSpec",
    "Note",
    "NotesError",
    "NotesStore",
    "Pattern",
    "Patterns",
    "ProjectConfig",
    "Results",
    "SkippedFile",
    "Slice",
    "StoreError",
    "StoreWriteError",
    "UserFacingError",
    "accuracy",
    "architectures",
    "block_classes",
    "block_sums",
    "cam",
    "candidate_layers",
    "cell_rows",
    "check_classes",
    "confusion_matrix",
    "corrected_true",
    "dataset_key",
    "deletion_insertion",
    "evaluate",
    "evaluation_maps",
    "faithfulness",
    "find_slices",
    "find_target_layer",
    "focus_classes",
    "grad_cam",
    "grad_cam_pp",
    "load_config",
    "load_image",
    "load_model",
    "load_tensor",
    "most_confused_classes",
    "open_dataset",
    "open_results",
    "per_class_metrics",
    "predict",
    "random_maps",
    "reliability",
    "result_columns",
    "result_layout",
    "result_patterns",
    "result_slices",
    "saliency",
    "sanity_check",
    "similar_images",
    "slice_table",
    "top_confused_pairs",
]  # the keys of _EXPORTS (tests/test_public_api.py)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return list(__all__)  # the public surface, as a star import sees it
