"""``python -m core faithfulness`` and ``python -m core sanity`` on the digits sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import main
from tests.projects import write_config

KEYS = {"score", "before", "keep", "remove", "keep_change", "remove_change", "class"}


def _stored_digits(config: Path):  # type: ignore[no-untyped-def]
    """The digits model's spec, dataset and stored result in ``config``'s cache."""
    from core import load_config, open_dataset
    from core.results.evaluate import stored_result

    project = load_config(config)
    spec = project.model("digits-cnn")
    dataset = open_dataset(project.dataset("digits-test"), spec.classes)
    result = stored_result(spec, dataset, project.cache_dir)
    assert result is not None
    return spec, dataset, result


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("trust"))


def test_faithfulness_of_a_cell_as_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["faithfulness", "--config", str(config), "--cell", "3,3", "--limit", "4", "--json"]
    )
    assert code == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found) == 4
    for item in found:
        assert item["path"].startswith("3/")
        assert set(item) == {"path", "pred", "true", "random"}
        assert all(set(item[k]) >= KEYS for k in ("pred", "true", "random"))
        assert item["pred"]["class"] == "3" and item["random"]["class"] == "3"
        assert item["random"]["before"] == pytest.approx(item["pred"]["before"])
    path = found[0]["path"]
    assert main(["faithfulness", "--config", str(config), "--image", path, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again[0]["pred"]["score"] == pytest.approx(found[0]["pred"]["score"], abs=1e-5)


def test_faithfulness_table_and_errors(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["faithfulness", "--config", str(config), "--cell", "3,3", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "random score" in out and "median: pred" in out
    assert main(["faithfulness", "--config", str(config), "--cell", "3,zebra"]) == 2
    assert "unknown class 'zebra'" in capsys.readouterr().err
    assert main(["faithfulness", "--config", str(config), "--image", "nope.png"]) == 2
    assert "not among the evaluated images" in capsys.readouterr().err
    args = ["faithfulness", "--config", str(config), "--cell", "1,1", "--method", "x"]
    assert main(args) == 2
    assert "unknown method 'x'" in capsys.readouterr().err


def test_sanity_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sanity", "--config", str(config), "--images", "8", "--method", "grad-cam", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"method", "layer", "stages", "passes"}
    assert report["method"] == "Grad-CAM" and isinstance(report["passes"], bool)
    assert report["stages"] and all(set(s) == {"randomised", "spearman"} for s in report["stages"])
    assert main(["sanity", "--config", str(config), "--images", "4"]) == 0
    assert "Spearman" in capsys.readouterr().out


def test_evaluate_with_faithfulness_stores_the_scores(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    import pandas as pd
    import torch

    from core import load_model
    from core.analysis.trust import load_images, stored_faithfulness
    from core.explain.cam import finish_maps
    from core.explain.faithfulness import faithfulness

    assert main(["evaluate", "--config", str(config), "--faithfulness"]) == 0
    assert "map faithfulness" in capsys.readouterr().out
    spec, dataset, result = _stored_digits(config)
    scores = stored_faithfulness(result)
    assert scores is not None and scores.shape == (len(result.manifest), 2)
    assert np.isfinite(scores[result.index]).all()
    # the same numbers as scoring the stored maps directly (a few rows, errors among them)
    table = result.predictions
    wrong = table["true"] != table["pred"]
    rows = pd.concat([table[wrong].head(3), table[~wrong].head(2)])
    model = load_model(spec)
    x, _, _ = load_images(model, dataset, list(rows["path"]))
    maps = finish_maps(torch.from_numpy(result.maps(rows["index"].to_numpy())), (32, 32))
    second = np.where(rows["true"] == rows["pred"], rows["runner_up"], rows["true"])
    cls = torch.tensor(np.stack([rows["pred"], second], 1), dtype=torch.long)
    expected = faithfulness(model.module, x, maps, cls).score
    np.testing.assert_allclose(scores[rows["index"].to_numpy()], expected, atol=2e-3)
    # a second run reads them back
    assert main(["evaluate", "--config", str(config), "--faithfulness"]) == 0


def test_faithfulness_config_key(config: Path, tmp_path: Path) -> None:
    from core import load_config
    from core.errors import ConfigError

    text = config.read_text()
    on = tmp_path / "on.toml"
    on.write_text(
        text.replace('name = "digits-cnn"\n', 'name = "digits-cnn"\nfaithfulness = true\n', 1)
    )
    assert load_config(on).model("digits-cnn").faithfulness
    assert not load_config(config).model("digits-cnn").faithfulness
    bad = tmp_path / "bad.toml"
    bad.write_text(
        text.replace('name = "digits-cnn"\n', 'name = "digits-cnn"\nfaithfulness = "yes"\n', 1)
    )
    with pytest.raises(ConfigError, match="faithfulness must be true or false"):
        load_config(bad)


def test_a_cell_of_several_pages_shows_the_median_of_all_its_stored_scores(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the scores stored by the evaluation, a cell longer than a page says the median of
    all its images' badges, not only the page's."""
    import numpy as np
    from streamlit.testing.v1 import AppTest

    from core.analysis.badges import badge_text
    from core.analysis.trust import stored_faithfulness
    from tests.projects import ROOT

    assert main(["evaluate", "--config", str(config), "--faithfulness"]) == 0
    _, _, result = _stored_digits(config)
    scores = stored_faithfulness(result)
    assert scores is not None
    table = result.predictions
    diagonal = table[table["true"] == table["pred"]]
    c = int(diagonal["true"].value_counts().idxmax())
    rows = diagonal[diagonal["true"] == c]
    assert len(rows) > 12  # more than the page of 12 asked for below
    want = [float(np.nanmedian(scores[rows["index"].to_numpy(), k])) for k in (0, 1)]

    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(config))
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    for name, value in {"model": "digits-cnn", "cell": f"{c},{c}", "page_size": "12"}.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception
    captions = [x.value for x in at.caption if "images of the cell" in x.value]
    assert captions == [
        f"Map faithfulness, median of all {len(rows):,} images of the cell: predicted-class maps "
        f"{badge_text(want[0])}, other maps {badge_text(want[1])} (scored by the evaluation)"
    ]
