"""Label quality: the chunked computation equals cleanlab's own functions, flags what it should."""

from __future__ import annotations

import numpy as np
import pytest
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from core.analysis.label_quality import LabelQuality, label_quality

# cleanlab warns that the never-given last class has too few examples; that is the point
pytestmark = pytest.mark.filterwarnings("ignore:May not flag all label issues:UserWarning")


def noisy_problem(seed: int, n: int = 3000, k: int = 12, dtype: type = np.float32):
    """Probabilities of a decent model, and labels of which ~8% were flipped."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k - 1, n)  # the last class is never a given label
    logits = rng.normal(0, 1.0, (n, k)) + 3.0 * np.eye(k)[truth]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = truth.copy()
    flipped = rng.random(n) < 0.08
    labels[flipped] = (truth[flipped] + rng.integers(1, k - 1, flipped.sum())) % (k - 1)
    return labels, probs.astype(dtype), flipped


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_rows", [257, 100_000])
def test_equals_cleanlab(seed: int, chunk_rows: int) -> None:
    labels, probs, _ = noisy_problem(seed)
    ours = label_quality(labels, probs, chunk_rows=chunk_rows)
    expected = find_label_issues(labels, probs, n_jobs=1)
    assert 50 < expected.sum() < 600  # a non-trivial case
    np.testing.assert_array_equal(ours.is_issue, expected)
    for method in ("self_confidence", "normalized_margin"):
        reference = get_label_quality_scores(labels, probs, method=method)
        np.testing.assert_allclose(getattr(ours, method), reference, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ours.suggested, probs.argmax(1))


def test_float16_equals_cleanlab_on_float32_copy() -> None:
    labels, probs, _ = noisy_problem(3, dtype=np.float16)
    ours = label_quality(labels, probs, chunk_rows=500)
    as32 = probs.astype(np.float32)
    np.testing.assert_array_equal(ours.is_issue, find_label_issues(labels, as32, n_jobs=1))
    reference = get_label_quality_scores(labels, as32, method="self_confidence")
    np.testing.assert_array_equal(ours.self_confidence, reference)


def test_memory_mapped_probs(tmp_path) -> None:
    labels, probs, _ = noisy_problem(4, dtype=np.float16)
    np.save(tmp_path / "probs.npy", probs)
    mapped = np.load(tmp_path / "probs.npy", mmap_mode="r")
    a, b = label_quality(labels, mapped, chunk_rows=700), label_quality(labels, probs)
    for name, array in a.to_arrays().items():
        np.testing.assert_array_equal(array, b.to_arrays()[name])


def test_flags_mostly_flipped_labels_and_ranks_them_first() -> None:
    labels, probs, flipped = noisy_problem(5)
    result = label_quality(labels, probs)
    ranked = result.ranked_issues()
    assert flipped[result.is_issue].mean() > 0.8  # precision
    assert result.is_issue[flipped].mean() > 0.6  # recall
    assert flipped[ranked[:50]].all()  # the most suspect are flipped labels
    scores = result.self_confidence[ranked]
    assert (np.diff(scores) >= 0).all()


def test_arrays_round_trip(tmp_path) -> None:
    labels, probs, _ = noisy_problem(6, n=500)
    result = label_quality(labels, probs)
    for name, array in result.to_arrays().items():
        np.save(tmp_path / f"{name}.npy", array)
    loaded = LabelQuality.from_arrays({p.stem: np.load(p) for p in tmp_path.glob("*.npy")})
    for name, array in result.to_arrays().items():
        np.testing.assert_array_equal(getattr(loaded, name), array)
        assert getattr(loaded, name).dtype == array.dtype


def test_bad_input_messages() -> None:
    labels, probs, _ = noisy_problem(7, n=100)
    with pytest.raises(ValueError, match="99 labels for 100 rows"):
        label_quality(labels[:99], probs)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 12\)"):
        label_quality(labels + 12, probs)
    with pytest.raises(ValueError, match="K >= 2"):
        label_quality(labels, probs[:, :1])
    arrays = label_quality(labels, probs).to_arrays()
    del arrays["is_issue"]
    with pytest.raises(ValueError, match="missing: is_issue"):
        LabelQuality.from_arrays(arrays)


def test_computed_once_per_result_and_stored_beside_it(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    import core.analysis.label_quality as module
    from core.results import ResultWriter
    from core.results.scores import scores_from_logits

    rng = np.random.default_rng(3)
    n, k = 400, 5
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    logits[np.arange(n), labels] += 2.5
    manifest = [(f"{y}/{i}.png", int(y)) for i, y in enumerate(labels)]
    with ResultWriter(tmp_path / "r", manifest, [str(c) for c in range(k)], "x") as writer:
        writer.write(
            scores_from_logits(np.arange(n), torch.from_numpy(labels), torch.from_numpy(logits))
        )
        result = writer.finish()
    first = module.result_label_quality(result)
    expected = label_quality(labels, result.probs(result.index))
    np.testing.assert_array_equal(first.is_issue, expected.is_issue)
    assert (result.folder / "derived" / "label_quality" / "is_issue.npy").is_file()

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("computed again although it was stored")

    monkeypatch.setattr(module, "label_quality", fail)
    again = module.result_label_quality(result)
    for name, value in first.to_arrays().items():
        np.testing.assert_array_equal(again.to_arrays()[name], value)
