"""The in-process engine, the results store it streams into, and ``evaluate`` (cache, resume)."""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from core.config import DatasetSpec
from core.data.datasets import open_dataset
from core.data.models import load_model
from core.errors import ClassCountMismatchError
from core.results import ResultWriter, StoreError, open_results
from core.results.evaluate import check_classes, evaluate
from core.results.local_engine import predict

COLUMNS = (
    "index", "path", "true", "pred", "confidence", "true_prob", "loss", "runner_up",
    "runner_up_prob",
)  # fmt: skip

# ``core.results.evaluate`` the attribute is the function; the module is needed to patch ``predict``
local_engine = importlib.import_module("core.results.local_engine")


def reference_outputs(root: Path, rels: list[str], reference, mean: float, std: float):
    """Logits of the digits CNN computed without core: PIL → numpy → normalise → forward."""
    pixels = []
    for rel in rels:
        with Image.open(root / rel) as image:
            assert image.mode == "L" and image.size == (32, 32)  # no resize/convert needed
            pixels.append(np.asarray(image, dtype=np.float32) / 255.0)
    x = (torch.from_numpy(np.stack(pixels))[:, None] - mean) / std
    with torch.inference_mode():
        return reference(x)


def probs_of(result) -> np.ndarray:
    return result.probs(result.predictions["index"].to_numpy())


def predict_into(model, dataset, folder: Path, **kwargs):
    """``predict`` into a fresh result folder, then open it."""
    with ResultWriter(folder, dataset.samples, dataset.classes, "test") as writer:
        predict(model, dataset, writer, **kwargs)
        return writer.finish()


def assert_same_evaluation(a, b) -> None:
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    np.testing.assert_array_equal(probs_of(a), probs_of(b))
    assert a.classes == b.classes
    assert a.skipped == b.skipped


# --- predictions table ------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1])
def test_table_matches_an_independent_computation(
    digits_subset, digits_model, digits_reference, workers, tmp_path: Path
) -> None:
    root = digits_subset(per_class=3)
    for source, target in (("0", "6"), ("1", "7"), ("4", "9")):  # wrong labels: true != pred
        first = sorted((root / source).iterdir())[0]
        first.rename(root / target / f"from{source}_{first.name}")
    dataset = open_dataset(DatasetSpec("d", root))
    calls: list[tuple[int, int]] = []
    result = predict_into(
        digits_model,
        dataset,
        tmp_path / "result",
        batch_size=7,
        num_workers=workers,
        progress=lambda d, t: calls.append((d, t)),
    )
    table = result.predictions
    assert tuple(table.columns) == COLUMNS
    assert len(table) == len(dataset) == 30
    assert result.classes == tuple(str(d) for d in range(10))
    assert result.skipped == ()
    assert table["index"].tolist() == list(range(30))
    assert table["path"].tolist() == [rel for rel, _ in dataset.samples]
    assert table["true"].tolist() == [int(rel.split("/")[0]) for rel in table["path"]]

    spec = digits_model.spec
    logits = reference_outputs(
        root, table["path"].tolist(), digits_reference, spec.mean[0], spec.std[0]
    )
    true = torch.tensor(table["true"].to_numpy(dtype=np.int64))
    softmax = logits.softmax(dim=1).numpy()
    probs = probs_of(result)
    assert probs.shape == (30, 10)
    np.testing.assert_allclose(probs, softmax, rtol=2e-3, atol=1e-4)  # stored as float16
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=5e-3)
    ranked = np.argsort(-softmax, axis=1, kind="stable")
    assert table["runner_up"].tolist() == ranked[:, 1].tolist()
    np.testing.assert_allclose(
        table["runner_up_prob"], softmax[np.arange(30), ranked[:, 1]], rtol=1e-4, atol=1e-6
    )
    assert table["pred"].tolist() == softmax.argmax(axis=1).tolist()
    np.testing.assert_allclose(table["confidence"], softmax.max(axis=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        table["true_prob"], softmax[np.arange(30), true.numpy()], rtol=1e-4, atol=1e-6
    )
    loss = F.cross_entropy(logits, true, reduction="none").numpy()
    np.testing.assert_allclose(table["loss"], loss, rtol=1e-4, atol=1e-5)
    assert (table["true"] != table["pred"]).sum() >= 3  # the relabelled ones at least

    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert done[-1] == 30 and len(calls) == 5  # ceil(30 / 7) batches
    assert {t for _, t in calls} == {30}


def test_progress_counts_unreadable_files(digits_subset, digits_model, tmp_path: Path) -> None:
    root = digits_subset(per_class=1)
    (root / "2" / "bad.png").write_bytes(b"not an image")
    calls: list[tuple[int, int]] = []
    result = predict_into(
        digits_model,
        open_dataset(DatasetSpec("d", root)),
        tmp_path / "result",
        batch_size=4,
        num_workers=0,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[-1] == (11, 11)
    assert len(result.predictions) == 10
    assert [s.path for s in result.skipped] == ["2/bad.png"]


# --- evaluate + cache -------------------------------------------------------------------


@pytest.fixture
def counted(monkeypatch) -> list[int]:
    """Counts the times ``evaluate`` really runs the model."""
    calls: list[int] = []
    original = local_engine.predict

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(local_engine, "predict", counting)
    return calls


@pytest.fixture
def project(tmp_path: Path, digits_subset, sample_config):
    """A digits model with its own copy of the weights, a small test set and a cache folder."""
    spec = sample_config.model("digits-cnn")
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(spec.weights.read_bytes())
    spec = replace(spec, weights=weights)
    root = digits_subset(per_class=2)
    return spec, root, tmp_path / "cache"


def run(spec, root: Path, cache: Path, **kwargs):
    """Load everything from scratch (new objects each time) and evaluate."""
    return evaluate(
        load_model(spec),
        open_dataset(DatasetSpec("d", root)),
        cache_dir=cache,
        num_workers=0,
        **kwargs,
    )


def test_second_evaluation_is_a_cache_hit(project, counted, monkeypatch) -> None:
    spec, root, cache = project
    first = run(spec, root, cache)
    assert counted == [1]
    assert first.fingerprint
    assert first.meta["model"] == spec.name and first.meta["dataset"] == "d"

    def fail(*args, **kwargs):
        raise AssertionError("the model ran although nothing changed")

    monkeypatch.setattr(local_engine, "predict", fail)
    calls: list[tuple[int, int]] = []
    second = run(spec, root, cache, progress=lambda d, t: calls.append((d, t)))
    assert_same_evaluation(first, second)
    assert second.fingerprint == first.fingerprint
    assert second.meta == first.meta
    assert calls == [(20, 20)]


def test_stored_result_is_found_without_the_model(project, counted) -> None:
    from core.results.evaluate import stored_result

    spec, root, cache = project
    dataset = open_dataset(DatasetSpec("d", root))
    assert stored_result(spec, dataset, cache) is None  # nothing yet
    first = run(spec, root, cache)
    found = stored_result(spec, open_dataset(DatasetSpec("d", root)), cache)
    assert found is not None and found.folder == first.folder
    assert_same_evaluation(first, found)
    assert stored_result(spec, dataset, cache, maps=False) is None  # other inputs: another key
    assert stored_result(replace(spec, layer="features.0"), dataset, cache) is None
    assert stored_result(spec, dataset, None) is None  # no cache: nothing is ever stored
    assert counted == [1]


def test_no_cache_dir_always_predicts(project, counted) -> None:
    spec, root, _ = project
    run(spec, root, None)
    run(spec, root, None)
    assert counted == [1, 1]


def test_changed_weights_invalidate(project, counted) -> None:
    spec, root, cache = project
    first = run(spec, root, cache)
    state = load_file(str(spec.weights))
    (bias,) = [k for k, v in state.items() if k.endswith("bias") and v.shape == (10,)]  # head
    state[bias] = state[bias] + torch.arange(10, dtype=state[bias].dtype)
    save_file(state, str(spec.weights))
    second = run(spec, root, cache)
    assert counted == [1, 1]
    assert second.fingerprint != first.fingerprint
    assert not np.allclose(probs_of(first), probs_of(second))
    run(spec, root, cache)
    assert counted == [1, 1]  # and the new weights' result is cached in turn


def test_changed_images_invalidate(project, counted) -> None:
    spec, root, cache = project
    keys = {run(spec, root, cache).fingerprint}
    # added
    extra = root / "4" / "extra.png"
    extra.write_bytes(next((root / "3").glob("*.png")).read_bytes())
    added = run(spec, root, cache)
    assert len(added.predictions) == 21
    keys.add(added.fingerprint)
    # modified content (and so size)
    Image.new("L", (32, 32), 255).save(extra)
    modified = run(spec, root, cache)
    before = added.probs([added.predictions.set_index("path").loc["4/extra.png", "index"]])
    after = modified.probs([modified.predictions.set_index("path").loc["4/extra.png", "index"]])
    assert not np.allclose(before, after)
    keys.add(modified.fingerprint)
    # modified time only
    st = extra.stat()
    os.utime(extra, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    keys.add(run(spec, root, cache).fingerprint)
    # removed
    extra.unlink()
    (root / "9" / sorted(p.name for p in (root / "9").iterdir())[0]).unlink()
    result = run(spec, root, cache)
    assert len(result.predictions) == 19
    keys.add(result.fingerprint)
    assert counted == [1] * 5
    assert len(keys) == 5


def test_changed_transform_invalidates(project, counted) -> None:
    spec, root, cache = project
    changes = [{"mean": (0.4,)}, {"std": (0.25,)}, {"input_size": (28, 28)}]
    results = [run(spec, root, cache)] + [run(replace(spec, **c), root, cache) for c in changes]
    assert counted == [1] * 4
    assert len({r.fingerprint for r in results}) == 4
    probs = [probs_of(r) for r in results]
    assert not any(np.allclose(probs[0], p) for p in probs[1:])
    for change, result in zip([{}, *changes], results, strict=True):  # every entry is kept
        assert_same_evaluation(run(replace(spec, **change), root, cache), result)
    assert counted == [1] * 4


def test_skipped_files_survive_the_cache(project, counted) -> None:
    spec, root, cache = project
    (root / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    first = run(spec, root, cache)
    second = run(spec, root, cache)
    assert counted == [1]
    assert [s.path for s in second.skipped] == ["0/broken.png"]
    assert_same_evaluation(first, second)


def _corrupt(folder: Path, how: str) -> None:
    if how == "garbage header":
        (folder / "result.json").write_bytes(b"\xff{not json")
    elif how == "header is a list":
        (folder / "result.json").write_text("[1, 2]")
    elif how == "missing header":
        (folder / "result.json").unlink()
    elif how == "unfinished":
        header = json.loads((folder / "result.json").read_text())
        (folder / "result.json").write_text(json.dumps({**header, "complete": False}))
    elif how == "truncated probs":
        probs = folder / "probs.npy"
        probs.write_bytes(probs.read_bytes()[: probs.stat().st_size // 2])
    elif how == "garbage manifest":
        (folder / "manifest.arrow").write_bytes(os.urandom(300))
    elif how == "missing column":
        (folder / "loss.npy").unlink()


CORRUPTIONS = [
    "garbage header",
    "header is a list",
    "missing header",
    "unfinished",
    "truncated probs",
    "garbage manifest",
    "missing column",
]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_damaged_result_folder_is_refused_with_a_message(project, how: str) -> None:
    spec, root, cache = project
    result = run(spec, root, cache)
    _corrupt(result.folder, how)
    with pytest.raises(StoreError, match=str(result.folder)):
        open_results(result.folder)


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_damaged_result_is_recomputed_and_rewritten(project, counted, how: str) -> None:
    spec, root, cache = project
    first = run(spec, root, cache)
    table, probs = first.predictions, probs_of(first)  # read before the damage
    _corrupt(first.folder, how)
    for again in (run(spec, root, cache), run(spec, root, cache)):  # rewritten, then a hit
        pd.testing.assert_frame_equal(table, again.predictions)
        np.testing.assert_array_equal(probs, probs_of(again))
    assert counted == [1, 1]


def test_the_store_holds_compact_columns_and_reads_them_memory_mapped(project) -> None:
    spec, root, cache = project
    result = run(spec, root, cache)
    assert result.columns["probs"].dtype == np.float16
    assert result.columns["probs"].shape == (20, 10)
    assert all(isinstance(c, np.memmap) for c in result.columns.values())
    assert result.predictions["path"].dtype == "string"  # Arrow-backed: no str per row
    header = json.loads((result.folder / "result.json").read_text())
    assert header["complete"] is True and header["rows"] == 20


def test_a_folder_of_other_inputs_is_started_afresh(tmp_path: Path, project) -> None:
    spec, root, _ = project
    model, dataset = load_model(spec), open_dataset(DatasetSpec("d", root))
    folder = tmp_path / "r"
    with ResultWriter(folder, dataset.samples, dataset.classes, "old") as writer:
        predict(model, dataset, writer, batch_size=4, num_workers=0)
    with ResultWriter(folder, dataset.samples, dataset.classes, "old") as writer:
        assert writer.todo().size == 0  # the same inputs: all done
    with ResultWriter(folder, dataset.samples, dataset.classes, "new") as writer:
        assert writer.todo().size == 20  # nothing of the other fingerprint is reused


def test_an_interrupted_evaluation_resumes_from_the_last_committed_batch(project) -> None:
    """Ctrl-C half-way: the next run computes only the missing rows, and the result equals an
    uninterrupted run's."""
    spec, root, cache = project
    whole = run(spec, root, cache.parent / "whole", batch_size=4)
    model = load_model(spec)
    dataset = open_dataset(DatasetSpec("d", root))

    def interrupt_at_12(done: int, total: int) -> None:
        if done == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(
            model, dataset, cache, num_workers=0, batch_size=4, commit_seconds=0,
            progress=interrupt_at_12,
        )  # fmt: skip
    (folder,) = (cache / "results").iterdir()
    assert (folder / "done.log").read_text().split("\n")[:3] == ["0 4", "4 8", "8 12"]
    seen: list[int] = []
    resumed = evaluate(
        model, dataset, cache, num_workers=0, batch_size=4, progress=lambda d, t: seen.append(d)
    )
    assert seen[0] == 16  # rows 0-11 were not computed again
    assert_same_evaluation(whole, resumed)


def test_class_count_mismatch_names_both_numbers(
    make_image_folder, digits_model, tmp_path: Path
) -> None:
    root = make_image_folder({"cat": 1, "dog": 1, "emu": 1}, mode="L")
    dataset = open_dataset(DatasetSpec("animals", root))
    with pytest.raises(ClassCountMismatchError) as info:
        check_classes(digits_model, dataset)
    message = str(info.value)
    assert "10" in message and "3" in message
    assert "cat" in message
    with pytest.raises(ClassCountMismatchError):
        evaluate(digits_model, dataset, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # refused before predicting anything


def test_default_workers_leave_the_cores_to_the_model_on_cpu(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import core.results.local_engine as predictions

    monkeypatch.setattr(predictions.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(predictions.torch, "get_num_threads", lambda: 8)
    assert predictions.default_workers("cpu") == 0
    assert predictions.default_workers("cuda") == 4
    monkeypatch.setattr(predictions.torch, "get_num_threads", lambda: 6)
    assert predictions.default_workers("cpu") == 2
