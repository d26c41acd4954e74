"""Embeddings stored by the evaluation pass, and the similar-images search over them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.analysis.similar import (
    nearest,
    neighbours_table,
    search_vectors,
    similar_images,
    stored_search_vectors,
)
from core.config import DatasetSpec, load_config
from core.data.datasets import open_dataset
from core.data.models import load_model
from core.errors import ConfigError, UserFacingError
from core.explain.embeddings import EMBEDDING_DIM, head_module, project, projection
from core.results import open_results
from core.results.evaluate import evaluate


@pytest.fixture(scope="module")
def digits_result(tmp_path_factory, sample_config, digits_model):
    """The digits CNN's result on the whole bundled test set (540 images)."""
    dataset = open_dataset(sample_config.dataset("digits-test"), digits_model.spec.classes)
    out = tmp_path_factory.mktemp("digits") / "result"
    return evaluate(digits_model, dataset, out=out, num_workers=0)


def test_embeddings_are_the_heads_input(digits_result, digits_reference) -> None:
    """Computed without core: the CNN up to its Linear head, on the PNGs as PIL reads them."""
    result = digits_result
    rows = np.arange(0, len(result.manifest), 37)
    paths = result.manifest.column("path").take(rows).to_pylist()
    pixels = []
    for rel in paths:
        with Image.open(result.meta["root"] + "/" + rel) as image:
            pixels.append(np.asarray(image, dtype=np.float32) / 255.0)
    x = (torch.from_numpy(np.stack(pixels))[:, None] - 0.5) / 0.5
    with torch.inference_mode():
        features = digits_reference[:-1](x).numpy()  # [n, 64]: all but the Linear
    stored = result.embeddings[rows].astype(np.float32)
    assert result.embeddings.dtype == np.float16 and result.embeddings.shape[1] == EMBEDDING_DIM
    assert result.embeddings.itemsize * EMBEDDING_DIM <= 256  # bytes per image
    np.testing.assert_allclose(stored[:, :64], features, rtol=2e-3, atol=2e-3)
    assert not stored[:, 64:].any()  # 64 features: stored as they are, zero-padded


def test_ten_nearest_neighbours_share_the_true_class(digits_result) -> None:
    """The CNN's features separate digits: random vectors would score about 10%."""
    result = digits_result
    true = result.manifest.column("label").to_numpy()
    shares = []
    for row in result.index:
        found = nearest(result.embeddings, result.embeddings[row], 10, exclude=_only(row, true))
        shares.append(float(np.mean(true[found.rows] == true[row])))
    assert len(shares) == 540
    assert np.mean(shares) >= 0.9, np.mean(shares)


def _only(row: int, true: np.ndarray) -> np.ndarray:
    mask = np.zeros(len(true), dtype=bool)
    mask[row] = True
    return mask


def test_nearest_equals_a_full_sort_and_skips_excluded_rows() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(1000, 16)).astype(np.float16)
    query = rng.normal(size=16)
    exclude = rng.random(1000) < 0.3
    found = nearest(vectors, query, 7, exclude, block_rows=128)  # several blocks
    dist = np.linalg.norm(vectors.astype(np.float64) - query, axis=1)
    dist[exclude] = np.inf
    expected = np.argsort(dist, kind="stable")[:7]
    np.testing.assert_array_equal(found.rows, expected)
    np.testing.assert_allclose(found.distances, dist[expected], rtol=1e-4)
    assert not exclude[found.rows].any()
    wide = vectors.astype(np.float32)  # the search copy: float32 and squared norms
    norms = np.einsum("ij,ij->i", wide, wide)
    fast = nearest(wide, query, 7, exclude, block_rows=128, norms=norms)
    np.testing.assert_array_equal(fast.rows, expected)
    np.testing.assert_allclose(fast.distances, dist[expected], rtol=1e-4)
    assert len(nearest(vectors[:3], query, 10).rows) == 3  # fewer rows than asked: all of them


def test_wide_features_are_projected_with_a_fixed_seeded_matrix() -> None:
    """resnet18's head input has 512 features: projected to 128, identically on every call."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=3).eval()
    assert head_module(model) is model.fc
    features = torch.randn(4, 512)
    a, b = project(features), project(features.clone())
    assert a.dtype == torch.float16 and a.shape == (4, EMBEDDING_DIM)
    torch.testing.assert_close(a, b)
    matrix = projection(512)
    assert matrix is not None
    torch.testing.assert_close(a.float(), features @ matrix, rtol=2e-3, atol=2e-3)
    # distances survive the projection roughly (Johnson-Lindenstrauss)
    x = torch.randn(200, 512)
    ratio = torch.pdist(project(x).float()) / torch.pdist(x)
    assert 0.8 < float(ratio.mean()) < 1.2


def test_heads_of_torchvision_families() -> None:
    import torchvision

    vgg = torchvision.models.vgg11(num_classes=3)
    assert head_module(vgg) is vgg.classifier[6]
    vit = torchvision.models.vit_b_16(num_classes=3)
    assert head_module(vit) is vit.heads.head


def test_a_killed_evaluation_resumes_with_its_embeddings_intact(tmp_path: Path, digits_subset):
    """Interrupted after 12 of 30 rows: the resumed result's embeddings equal an uninterrupted
    run's, row for row (none left zero, none recomputed from another batch)."""
    root = digits_subset(per_class=3)
    spec = load_config(Path(__file__).parents[1] / "sample_models" / "config.toml").model(
        "digits-cnn"
    )
    model = load_model(spec)
    dataset = open_dataset(DatasetSpec("d", root))
    whole = evaluate(model, dataset, out=tmp_path / "whole", num_workers=0, batch_size=4)

    def interrupt_at_12(done: int, total: int) -> None:
        if done == 12:
            raise KeyboardInterrupt

    folder = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        evaluate(
            model, dataset, out=folder, num_workers=0, batch_size=4, commit_seconds=0,
            progress=interrupt_at_12,
        )  # fmt: skip
    seen: list[int] = []
    resumed = evaluate(
        model,
        dataset,
        out=folder,
        num_workers=0,
        batch_size=4,
        progress=lambda d, t: seen.append(d),
    )
    assert seen[0] == 16  # rows 0-11 came from the killed run
    assert np.abs(whole.embeddings.astype(np.float32)).sum(1).min() > 0
    np.testing.assert_array_equal(resumed.embeddings, whole.embeddings)


def test_a_query_before_the_float32_copy_exists_finds_the_same_rows(
    tmp_path: Path, digits_subset, digits_model
) -> None:
    """Until the search copy is made (in the background), queries read the float16 embeddings:
    the same neighbours and distances as with the copy."""
    dataset = open_dataset(DatasetSpec("d", digits_subset(per_class=6)))
    result = evaluate(digits_model, dataset, out=tmp_path / "r", num_workers=0)
    rows = result.index[:: max(1, len(result.index) // 7)]
    before = [neighbours_table(result, int(r), 5) for r in rows]
    assert stored_search_vectors(result) is None
    prepared = search_vectors(result)
    assert stored_search_vectors(result) is not None
    for r, table in zip(rows, before, strict=True):
        with_copy = neighbours_table(result, int(r), 5, prepared)
        assert list(table["path"]) == list(with_copy["path"])
        np.testing.assert_allclose(table["distance"], with_copy["distance"], rtol=1e-4, atol=1e-5)
        assert int(r) not in set(table["index"])


def test_embeddings_can_be_turned_off(tmp_path: Path, digits_subset, digits_model) -> None:
    from dataclasses import replace

    from core.data.models import LoadedModel

    root = digits_subset(per_class=1)
    dataset = open_dataset(DatasetSpec("d", root))
    off = evaluate(digits_model, dataset, out=tmp_path / "a", num_workers=0, embeddings=False)
    assert not off.has_embeddings and not (off.folder / "embeddings.npy").exists()
    quiet = LoadedModel(
        **{**vars(digits_model), "spec": replace(digits_model.spec, embeddings=False)}
    )
    assert not evaluate(quiet, dataset, out=tmp_path / "b", num_workers=0).has_embeddings
    with pytest.raises(UserFacingError, match="no embeddings"):
        similar_images(off, "3/" + sorted((root / "3").iterdir())[0].name)


def test_config_key_embeddings(tmp_path: Path) -> None:
    base = '[[models]]\nname = "m"\narchitecture = "resnet18"\nweights = "w.pt"\n'
    data = '[[datasets]]\nname = "d"\nroot = "."\n'
    (tmp_path / "a.toml").write_text(base + "embeddings = false\n" + data)
    assert load_config(tmp_path / "a.toml").model().embeddings is False
    (tmp_path / "b.toml").write_text(base + data)
    assert load_config(tmp_path / "b.toml").model().embeddings is True
    (tmp_path / "c.toml").write_text(base + 'embeddings = "no"\n' + data)
    with pytest.raises(ConfigError, match="embeddings must be true or false"):
        load_config(tmp_path / "c.toml")


def test_cli_similar_json(tmp_path: Path, digits_subset, sample_config, capsys) -> None:
    from core.cli import main

    root = digits_subset(per_class=4)
    spec = sample_config.model("digits-cnn")
    (tmp_path / "digits_model.py").write_text((spec.base_dir / "digits_model.py").read_text())
    config = tmp_path / "config.toml"
    config.write_text(
        f'cache_dir = "cache"\n[[models]]\nname = "digits-cnn"\nfactory = "digits_model:build"\n'
        f'weights = "{spec.weights.as_posix()}"\ninput_size = [32, 32]\nchannels = 1\n'
        f'mean = [0.5]\nstd = [0.5]\n[[datasets]]\nname = "d"\nroot = "{root.as_posix()}"\n'
    )
    query = "7/" + sorted((root / "7").iterdir())[0].name
    code = main(["similar", "--config", str(config), "--image", query, "--top", "6", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    found = json.loads(out)
    assert len(found) == 6
    assert all(set(item) == {"path", "true", "pred", "distance"} for item in found)
    assert query not in [item["path"] for item in found]
    assert (tmp_path / "cache" / "results").is_dir()
    distances = [item["distance"] for item in found]
    assert distances == sorted(distances) and distances[0] > 0
    assert sum(item["true"] == "7" for item in found) >= 3  # the other three 7s come first
    (result_folder,) = (tmp_path / "cache" / "results").iterdir()
    result = open_results(result_folder)
    row = result.manifest.column("path").to_pylist().index(query)
    dist = np.linalg.norm(
        result.embeddings.astype(np.float32) - result.embeddings[row].astype(np.float32), axis=1
    )
    dist[row] = np.inf
    paths = result.manifest.column("path").to_pylist()
    assert [item["path"] for item in found] == [paths[i] for i in np.argsort(dist)[:6]]
    assert stored_search_vectors(result) is None  # a query alone writes nothing
    wide, norms = search_vectors(result)  # the float32 copy, saved beside the result
    assert (result_folder / "derived" / "similar" / "vectors.npy").is_file()
    np.testing.assert_array_equal(wide, result.embeddings.astype(np.float32))
    np.testing.assert_allclose(norms, (wide.astype(np.float64) ** 2).sum(1), rtol=1e-5)

    assert main(["similar", "--config", str(config), "--image", "nope.png"]) == 2
    assert "not an image of this result" in capsys.readouterr().err
