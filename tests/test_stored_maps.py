"""Maps made in the evaluation pass: stored beside the predictions, equal to on-demand maps,
and a cell's pages drawn from them without any model call."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from core import evaluate, load_model, open_dataset
from core.analysis.gallery import compared_classes, stored_maps, uses_stored_maps
from core.config import DatasetSpec, ModelSpec
from core.data.models import LoadedModel
from core.explain.cam import grad_cam
from core.results.evaluate import map_layer
from tests.projects import SAMPLE


def on_demand(model: LoadedModel, dataset, rows) -> np.ndarray:
    """Today's gallery maps for ``rows``: Grad-CAM of the compared classes, computed now."""
    images = torch.stack(
        [model.transform(dataset_image(model, dataset, path)) for path in rows["path"]]
    )
    classes = torch.tensor([compared_classes(row) for _, row in rows.iterrows()])
    return grad_cam(model.module, images, classes, layer=model.spec.layer).numpy()


def dataset_image(model: LoadedModel, dataset, rel: str):
    from core.data.images import load_image

    return load_image(dataset.path(rel), model.spec.channels)


def check_stored_equals_on_demand(model: LoadedModel, dataset, cache: Path) -> None:
    result = evaluate(model, dataset, cache_dir=cache, num_workers=0)
    assert result.has_maps and result.meta["map_layer"] == map_layer(model)[0]
    table = result.predictions
    errors = table[table["true"] != table["pred"]].head(8)
    right = table[table["true"] == table["pred"]].head(8)
    for rows in (errors, right):
        if rows.empty:
            continue
        stored = np.asarray(stored_maps(result, rows, model.spec.input_size))
        fresh = on_demand(model, dataset, rows)
        assert stored.shape == fresh.shape == (len(rows), 2, *model.spec.input_size)
        assert (fresh.std(axis=(2, 3)) > 0.05).mean() > 0.75  # not a comparison of blank maps
        np.testing.assert_allclose(stored, fresh, atol=2e-3)  # float16 storage


def test_digits_sample(digits_model, sample_config, tmp_path: Path) -> None:
    dataset = open_dataset(sample_config.dataset("digits-test"))
    check_stored_equals_on_demand(digits_model, dataset, tmp_path)


def test_shapes_sample_resnet(sample_config, tmp_path: Path) -> None:
    model = load_model(sample_config.model("shapes-resnet (shortcut)"))
    dataset = open_dataset(sample_config.dataset("shapes-test"), model.spec.classes)
    check_stored_equals_on_demand(model, dataset, tmp_path)


def test_torchvision_resnet18(make_image_folder, tmp_path: Path) -> None:
    """A torchvision ResNet (random weights, 3 classes, 64×64: a 2×2 layer4 map)."""
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.safetensors"
    save_file(torchvision.models.resnet18(num_classes=3).state_dict(), str(weights))
    spec = ModelSpec(name="r18", architecture="resnet18", weights=weights, input_size=(96, 96))
    root = make_image_folder({"a": 6, "b": 6, "c": 6}, size=(96, 96))
    model = load_model(spec)
    check_stored_equals_on_demand(model, open_dataset(DatasetSpec("d", root)), tmp_path)


def test_maps_are_compact_and_can_be_turned_off(digits_model, digits_subset, tmp_path) -> None:
    dataset = open_dataset(DatasetSpec("d", digits_subset(per_class=2)))
    with_maps = evaluate(digits_model, dataset, cache_dir=tmp_path, num_workers=0)
    h, w = with_maps.columns["maps"].shape[2:]
    assert with_maps.columns["maps"].dtype == np.float16
    assert with_maps.columns["maps"].nbytes / len(dataset) == 2 * 2 * h * w  # 2 maps, float16
    without = evaluate(digits_model, dataset, cache_dir=tmp_path, num_workers=0, maps=False)
    assert not without.has_maps and without.fingerprint != with_maps.fingerprint
    off = replace(digits_model, spec=replace(digits_model.spec, maps=False))
    assert not evaluate(off, dataset, cache_dir=tmp_path, num_workers=0).has_maps
    np.testing.assert_array_equal(with_maps.probs(with_maps.index), without.probs(without.index))
    assert uses_stored_maps(with_maps, "Grad-CAM", None)
    assert uses_stored_maps(with_maps, "Grad-CAM", with_maps.meta["map_layer"])
    assert not uses_stored_maps(with_maps, "Grad-CAM++", None)
    assert not uses_stored_maps(with_maps, "Grad-CAM", "features.0")
    assert not uses_stored_maps(without, "Grad-CAM", None)


def test_a_config_layer_is_respected(digits_model, digits_subset, tmp_path) -> None:
    from core.explain.cam import candidate_layers

    layers = [info for info in candidate_layers(digits_model.module, digits_model.input_shape)]
    chosen = next(info for info in layers if info.name != map_layer(digits_model)[0])
    model = replace(digits_model, spec=replace(digits_model.spec, layer=chosen.name))
    dataset = open_dataset(DatasetSpec("d", digits_subset(per_class=2)))
    result = evaluate(model, dataset, cache_dir=tmp_path, num_workers=0)
    assert result.meta["map_layer"] == chosen.name
    assert result.columns["maps"].shape[2:] == chosen.shape[-2:]


@pytest.fixture
def sample_root() -> Path:
    return SAMPLE


def test_opening_a_cell_and_turning_pages_makes_no_forward_pass(tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    import threading

    from streamlit.testing.v1 import AppTest

    from core import cell_rows
    from dashboard.state import resources
    from tests.projects import ROOT, expected, write_config

    project = write_config(tmp_path)
    result = expected(project)
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(project))
    app = str(ROOT / "dashboard" / "app.py")
    AppTest.from_file(app, default_timeout=120).run()  # loads the model, its layers, warm-up
    thread = resources.warm_up(str(project), "digits-cnn", "digits-test", result.fingerprint)
    assert thread is not None
    thread.join(timeout=120)
    model = resources.model(str(project), "digits-cnn")
    calls: list[str] = []  # forward passes for maps; the faithfulness badges' own are by design
    handle = model.module.register_forward_pre_hook(
        lambda *_: (
            None
            if threading.current_thread().name.startswith("badges")
            else calls.append(threading.current_thread().name)
        )
    )
    try:
        for params in ({"cell": "9,9"}, {"cell": "9,9", "page": "3", "page_size": "12"}):
            at = AppTest.from_file(app, default_timeout=120)
            for name, value in params.items():
                at.query_params[name] = value
            at.run()
            assert not at.exception
            assert any("cam-card" in h.value for h in at.html)
    finally:
        handle.remove()
    assert len(cell_rows(result.predictions, 9, 9)) > 24  # page 3 exists, past the warmed page
    assert calls == []  # every map came from the result


@pytest.mark.parametrize(
    ("src", "dst"), [((7, 7), (224, 224)), ((8, 8), (64, 64)), ((4, 6), (32, 48))]
)
def test_numpy_display_normalisation_equals_finish_maps(src, dst) -> None:  # type: ignore[no-untyped-def]
    """Stored maps are drawn in NumPy (no torch for a gallery page): the same pixels as the
    torch path that grad_cam uses, flat and all-negative maps included."""
    from core.explain.cam import finish_maps
    from core.explain.normalise import display_maps

    raw = np.random.default_rng(0).normal(size=(5, 2, *src)).astype(np.float16)
    raw[0, 0] = 0.5  # flat
    raw[1, 1] = -np.abs(raw[1, 1])  # nothing left after the ReLU
    expected = finish_maps(torch.from_numpy(raw), dst).numpy()
    drawn = display_maps(raw, dst)
    assert drawn.dtype == np.float32 and drawn.shape == expected.shape
    np.testing.assert_allclose(drawn, expected, atol=1e-6)


def test_a_stored_page_is_drawn_without_torch(tmp_path: Path) -> None:
    """A fresh server's first click, on stored maps, does not wait for torch to import."""
    import subprocess
    import sys

    from tests.projects import ROOT, expected, write_config

    project = write_config(tmp_path)
    result = expected(project)
    assert result.meta["input_size"] == [32, 32]
    code = f"""
import sys
from core.analysis.gallery import stored_maps, stored_size
from core.analysis.metrics import cell_rows
from core.analysis.panels import PanelCache
from core.config import load_config
from core.data.datasets import open_dataset
from core.results.evaluate import lookup
config = load_config({str(project)!r})
data = open_dataset(config.dataset("digits-test"))
result = lookup(config.model("digits-cnn"), data, config.cache_dir).result
rows = cell_rows(result.predictions, 3, 9)
maps = stored_maps(result, rows, stored_size(result))
urls = PanelCache().panels(data, rows["path"].iloc[0], maps[0], 0.5)
assert len(urls) == 3 and all(u.startswith("data:image/") for u in urls)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
