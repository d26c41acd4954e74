"""The Compare page for N checkpoints with AppTest, driven by the URL: the heatmap of groups ×
candidates, deep links to a group's newly broken or fixed images (the page's own and the ones
``python -m core check`` prints), and links that name unknown models or groups.

On the shapes sample with its metadata (site, scanner, captured; baseline: the ResNet trained
without the mark; candidates: the shortcut ResNet and the small convnet). Groups: overall, each
class and the slice groups ``check`` tests (each metadata value). Expected numbers are counted
here from the stored predictions and the sample's ``sites.csv``; the verdicts and image orders
are those of ``core.analysis.regression`` (tested against scipy in ``tests/test_check.py``).
A slice in the URL (``where=``) restricts both views to its images.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from core.analysis.comparison import Agreement
from core.analysis.regression import Gate, check_results
from core.cli.check import group_link, slice_masks
from core.cli.common import results
from core.config import load_config
from core.data.datasets import dataset_key
from core.notes import NotesStore
from core.saved_slices import SavedSlices
from tests.apptest import VIEWS, card_paths, run

COMPARE = str(VIEWS / "compare.py")
SAMPLE = Path(__file__).resolve().parents[1] / "sample_models"
CLEAN, SHORTCUT, CONVNET = "shapes-resnet (clean)", "shapes-resnet (shortcut)", "shapes-convnet"
REORDERED, ELSEWHERE, BROKEN = "classes reordered", "on another dataset", "missing weights"
DATASET = "shapes-test"
CLASSES = ["circle", "cross", "square", "star", "triangle"]
SITES = SAMPLE / "shapes" / "test" / "sites.csv"  # path, site, scanner, captured


def _model(name: str, weights: str, factory: str = "resnet_shapes", **extra: str) -> str:
    lines = {
        "name": json.dumps(name),
        "factory": json.dumps(f"shapes_models:{factory}"),
        "weights": json.dumps((SAMPLE / "shapes" / weights).as_posix()),
        "input_size": "[64, 64]",
        "mean": "[0.5, 0.5, 0.5]",
        "std": "[0.5, 0.5, 0.5]",
        "classes": json.dumps(CLASSES),
        "datasets": json.dumps([DATASET]),
    } | extra
    return "\n[[models]]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's three shapes models (config order: shortcut, clean, convnet) and three
    that cannot be compared, with the cache in a temporary folder; the three evaluated."""
    folder = tmp_path_factory.mktemp("checkpoints")
    (folder / "shapes_models.py").write_bytes((SAMPLE / "shapes_models.py").read_bytes())
    reordered = json.dumps([CLASSES[1], CLASSES[0], *CLASSES[2:]])
    root = (SAMPLE / "shapes" / "test").as_posix()
    text = (
        'cache_dir = "cache"\n'
        + _model(SHORTCUT, "resnet_shortcut.safetensors")
        + _model(CLEAN, "resnet_clean.safetensors")
        + _model(CONVNET, "convnet.safetensors", "convnet_shapes")
        + _model(REORDERED, "resnet_clean.safetensors", classes=reordered)
        + _model(ELSEWHERE, "resnet_clean.safetensors", datasets='["shapes-copy"]')
        + _model(BROKEN, "missing.safetensors")
        + f'\n[[datasets]]\nname = "{DATASET}"\nroot = "{root}"\n'
        + f'metadata = "{SITES.as_posix()}"\n'
        + f'\n[[datasets]]\nname = "shapes-copy"\nroot = "{root}"\n'
    )
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    for name in (SHORTCUT, CLEAN, CONVNET):
        results(config, name, DATASET)  # evaluated once, into the project's cache
    return path


@pytest.fixture(scope="module")
def gates(project: Path) -> dict[str, Gate]:
    """What ``python -m core check`` finds for each candidate, its slice groups included."""
    config = load_config(project)
    base = results(config, CLEAN, DATASET)
    slices = slice_masks(config, DATASET, base)
    found = {m: check_results(base, results(config, m, DATASET), slices=slices) for m in
             (SHORTCUT, CONVNET)}  # fmt: skip
    for gate in found.values():  # every image paired, in the baseline's order
        assert np.array_equal(gate.comparison.rows_a, np.arange(len(base.index)))
    return found


def _site(project: Path, column: str, value: str) -> np.ndarray:
    """Which of the baseline's evaluated images have ``column == value`` in sites.csv (read
    here with pandas, not with the project's metadata code)."""
    table = pd.read_csv(SITES, dtype=str).set_index("path")[column]
    paths = results(load_config(project), CLEAN, DATASET).predictions["path"].astype(str)
    return (paths.map(table) == value).to_numpy()


def _names(gate: Gate) -> list[str]:
    """The heatmap's row labels of a gate's groups, in order."""
    return [
        n if g in ("overall", "class") else f"{g}: {n}"
        for g, n in zip(gate.table["group"], gate.table["name"], strict=True)
    ]


def _figures(at) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _array(value) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A Plotly JSON array: a plain list, or ``{"dtype", "bdata", "shape"}`` (base64)."""
    if not isinstance(value, dict):
        return np.asarray(value)
    data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    shape = value.get("shape")
    return data.reshape([int(s) for s in str(shape).split(",")]) if shape else data


def _accuracy(project: Path, model: str, groups: list[np.ndarray] | None = None) -> list[float]:
    """Overall and per-class accuracy of a stored result, counted here; with ``groups``
    (masks over the evaluated images), the accuracy in each of them instead."""
    table = results(load_config(project), model, DATASET).predictions
    right = (table["true"] == table["pred"]).to_numpy()
    true = table["true"].to_numpy()
    if groups is not None:
        return [right[m].mean() for m in groups]
    return [right.mean(), *(right[true == k].mean() for k in range(len(CLASSES)))]


def _no_exception(at) -> None:  # type: ignore[no-untyped-def]
    assert not at.exception, [e.value for e in at.exception]


def test_heatmap_of_groups_by_candidates(project: Path, gates: dict[str, Gate], monkeypatch):  # type: ignore[no-untyped-def]
    at = run(COMPARE, project, monkeypatch, model=CLEAN, candidates=[CONVNET, SHORTCUT])
    _no_exception(at)
    heatmap, accuracy = _figures(at)
    cells, marks, grid = heatmap["data"]
    assert cells["type"] == "heatmap"
    assert heatmap["layout"]["xaxis"]["ticktext"] == [SHORTCUT, CONVNET]  # config order
    names = _names(gates[SHORTCUT])
    assert names[: 1 + len(CLASSES)] == ["overall", *CLASSES]
    assert {"slice: site = A", "slice: site = B", "slice: scanner = S2"} <= set(names)
    assert heatmap["layout"]["yaxis"]["ticktext"] == names
    keys = gates[SHORTCUT].table[["group", "name"]].to_numpy()
    groups = [gates[SHORTCUT].mask(g, n) for g, n in keys]
    site_b = names.index("slice: site = B")
    assert np.array_equal(groups[site_b], _site(project, "site", "B"))
    base = np.array(_accuracy(project, CLEAN, groups))
    change = np.stack(
        [np.array(_accuracy(project, m, groups)) - base for m in (SHORTCUT, CONVNET)], 1
    )
    assert np.allclose(_array(cells["z"]), change * 100)  # points
    verdicts = np.stack([gates[m].table["verdict"].to_numpy() for m in (SHORTCUT, CONVNET)], 1)
    rows, cols = np.nonzero(verdicts != "")
    assert len(rows) > 0  # the shortcut model regresses on cross, square, triangle, overall
    marked = list(zip(_array(marks["y"]).tolist(), _array(marks["x"]).tolist(), strict=True))
    assert sorted(marked) == sorted(zip(rows.tolist(), cols.tolist(), strict=True))
    symbols = dict(zip(marked, marks["marker"]["symbol"], strict=True))
    for r, c in zip(rows, cols, strict=True):
        up = verdicts[r, c] == "improvement"
        assert symbols[(int(r), int(c))] == ("triangle-up" if up else "triangle-down")
    payload = grid["customdata"]  # the hover text and the click of every cell
    assert len(payload) == change.size
    keys = list(gates[SHORTCUT].table["name"])
    for item in payload:
        r = keys.index(item[2])
        c = [SHORTCUT, CONVNET].index(item[0])
        row = gates[item[0]].table.iloc[r]
        assert item[4] == row["n"]
        assert item[3] == ("broken" if row["broken"] >= row["fixed"] else "fixed")  # the losses
        assert (row["broken"] >= row["fixed"]) == (change[r, c] <= 0)
    # accuracy across the checkpoints, in config order, baseline marked
    assert accuracy["layout"]["xaxis"]["type"] == "category"
    lines = {trace["name"]: trace for trace in accuracy["data"]}
    assert set(lines) == {"overall", *CLASSES}
    assert list(lines["overall"]["x"]) == [SHORTCUT, f"{CLEAN} (baseline)", CONVNET]
    for i, name in enumerate(["overall", *CLASSES]):
        want = [_accuracy(project, m)[i] for m in (SHORTCUT, CLEAN, CONVNET)]
        assert np.allclose(_array(lines[name]["y"]), want)
    assert not at.button  # no cell picked yet: no gallery


@pytest.mark.parametrize(("model", "group", "cell"), [
    (SHORTCUT, "cross", Agreement.BROKEN), (CONVNET, "star", Agreement.FIXED),
])  # fmt: skip
def test_a_cells_deep_link_opens_its_images(
    project: Path, gates: dict[str, Gate], model: str, group: str, cell: Agreement, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    gate = gates[model]
    rows = gate.rows("class", group, cell)
    assert len(rows) > 0
    at = run(
        COMPARE, project, monkeypatch, model=CLEAN, candidates=[SHORTCUT, CONVNET],
        model_b=model, group=f"class:{group}", agree=cell.name.lower(),
    )  # fmt: skip
    _no_exception(at)
    heading = f"{cell.label} · class {group}: {len(rows)} images"
    assert any(s.value == heading for s in at.subheader)
    assert card_paths(at) == [str(p) for p in gate.comparison.paths[rows][:12]]
    (shape,) = _figures(at)[0]["layout"]["shapes"]  # the picked cell, outlined
    r, c = 1 + CLASSES.index(group), [SHORTCUT, CONVNET].index(model)
    assert [shape[k] for k in ("x0", "x1", "y0", "y1")] == [c - 0.5, c + 0.5, r - 0.5, r + 0.5]
    row = gate.table.set_index("name").loc[group]
    line = next(m.value for m in at.markdown if "newly broken," in m.value)
    assert f"{int(row['broken'])} newly broken, {int(row['fixed'])} fixed" in line
    assert f"p = {row['p']:.3g}" in line and f"**{row['verdict']}**" in line
    other = Agreement.FIXED if cell == Agreement.BROKEN else Agreement.BROKEN
    label = {Agreement.BROKEN: "newly broken", Agreement.FIXED: "fixed"}[other]
    next(b for b in at.button if b.label.startswith(f"{label}:")).click().run()
    _no_exception(at)
    assert at.query_params["agree"] == other.name.lower()
    shown = gate.comparison.paths[gate.rows("class", group, other)][:12]
    assert card_paths(at) == [str(p) for p in shown]


def test_the_check_commands_links_open_the_groups_images(
    project: Path, gates: dict[str, Gate], monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    gate = gates[SHORTCUT]
    found = [*gate.regressions.itertuples(), *gate.improvements.itertuples()]
    assert {"cross", "overall", "site = B"} <= {r.name for r in found}
    for row in found:
        link = group_link(gate, row.group, row.name, row.verdict)
        assert urlsplit(link).path == "compare-models"
        params = dict(parse_qsl(urlsplit(link).query))
        at = run(COMPARE, project, monkeypatch, **params)  # the two-model view
        _no_exception(at)
        cell = Agreement.FIXED if row.verdict == "improvement" else Agreement.BROKEN
        want = gate.rows(row.group, row.name, cell)
        assert card_paths(at) == [str(p) for p in gate.comparison.paths[want][:12]], link
        assert at.button  # the 2 × 2 table is there too
        if row.group != "overall":
            heading = f"{row.group} {row.name}: {len(want)} images"
            assert any(heading in s.value for s in at.subheader), link


@pytest.mark.parametrize(("params", "message"), [
    ({"model": CLEAN, "model_b": "nope"}, "Unknown model in the link.** 'nope' (model_b)"),
    ({"model": "nope", "model_b": SHORTCUT}, "Unknown model in the link.** 'nope' (model)"),
    ({"model": CLEAN, "candidates": [SHORTCUT, "nope"]}, "'nope' (candidates)"),
    ({"model": CLEAN, "model_b": REORDERED}, f"'{REORDERED}' declares other classes"),
    ({"model": CLEAN, "model_b": ELSEWHERE}, "is not evaluated on dataset 'shapes-test'"),
    ({"model": CLEAN, "model_b": SHORTCUT, "agree": "broken", "group": "class:blob"},
     "no group class:blob"),
    ({"model": CLEAN, "candidates": [SHORTCUT, CONVNET], "model_b": SHORTCUT, "agree": "fixed",
      "group": "colour:red"}, "write group=class:<name>"),
])  # fmt: skip
def test_links_that_cannot_be_shown_say_why(
    project: Path, params: dict, message: str, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    at = run(COMPARE, project, monkeypatch, **params)
    _no_exception(at)
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert not card_paths(at)


def test_candidates_that_cannot_be_compared_are_left_out(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(
        COMPARE, project, monkeypatch, model=CLEAN,
        candidates=[SHORTCUT, REORDERED, ELSEWHERE, BROKEN],
    )  # fmt: skip
    _no_exception(at)
    warnings = " ".join(w.value for w in at.warning)
    for name, why in ((REORDERED, "declares other classes"), (ELSEWHERE, "not evaluated on"),
                      (BROKEN, "missing.safetensors")):  # fmt: skip
        assert f"**{name}** is left out: " in warnings and why in warnings
    assert _figures(at)[0]["layout"]["xaxis"]["ticktext"] == [SHORTCUT]  # the one that can


def test_the_candidates_picker_switches_between_the_views(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(COMPARE, project, monkeypatch, model=CLEAN)
    _no_exception(at)
    picker = at.sidebar.multiselect[0]
    assert picker.value == [SHORTCUT]  # the first comparable model: the two-model view
    assert any(b.label.startswith("fixed: ") for b in at.button) and not _figures(at)
    picker.set_value([CONVNET, SHORTCUT]).run()
    _no_exception(at)
    assert at.query_params["candidates"] == [CONVNET, SHORTCUT] and "model_b" not in at.query_params
    assert len(_figures(at)) == 2  # heatmap and accuracy
    at.sidebar.multiselect[0].set_value([CONVNET]).run()
    assert at.query_params["model_b"] == CONVNET and "candidates" not in at.query_params
    assert not _figures(at)
    at.sidebar.multiselect[0].set_value([]).run()
    _no_exception(at)
    assert any("Pick one or more candidates" in i.value for i in at.info)


def test_only_the_significant_groups_on_request(
    project: Path, gates: dict[str, Gate], monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    names = _names(gates[SHORTCUT])
    verdicts = np.stack([gates[m].table["verdict"].to_numpy() for m in (SHORTCUT, CONVNET)], 1)
    kept = [n for i, n in enumerate(names) if i == 0 or (verdicts[i] != "").any()]
    assert len(kept) < len(names)  # circle changed significantly for neither candidate
    at = run(
        COMPARE, project, monkeypatch, model=CLEAN, candidates=[SHORTCUT, CONVNET],
        rows="significant", model_b=CONVNET, group="class:square", agree="broken",
    )  # fmt: skip
    _no_exception(at)
    heatmap = _figures(at)[0]
    assert heatmap["layout"]["yaxis"]["ticktext"] == kept
    (shape,) = heatmap["layout"]["shapes"]  # the picked cell, at its row among those shown
    assert (shape["x0"] + 0.5, shape["y0"] + 0.5) == (1, kept.index("square"))


def _right(project: Path, model: str) -> np.ndarray:
    table = results(load_config(project), model, DATASET).predictions
    return (table["true"] == table["pred"]).to_numpy()


def test_a_slice_restricts_the_two_model_view(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """where=site:B: the 2 × 2 table, McNemar's test, the cell's gallery and the per-class
    table count only site B's images (counted here from both results and sites.csv)."""
    inside = _site(project, "site", "B")
    table = results(load_config(project), CLEAN, DATASET).predictions
    right_a, right_b = _right(project, CLEAN), _right(project, SHORTCUT)
    pred_a = table["pred"].to_numpy()
    pred_b = results(load_config(project), SHORTCUT, DATASET).predictions["pred"].to_numpy()
    broken, fixed = inside & right_a & ~right_b, inside & ~right_a & right_b
    wrong = inside & ~right_a & ~right_b
    want = {
        "both right": (inside & right_a & right_b).sum(), "newly broken": broken.sum(),
        "fixed": fixed.sum(), "both wrong, same class": (wrong & (pred_a == pred_b)).sum(),
        "both wrong, different": (wrong & (pred_a != pred_b)).sum(),
    }  # fmt: skip
    assert 0 < inside.sum() < len(inside) and broken.sum() > 12
    at = run(COMPARE, project, monkeypatch, model=CLEAN, model_b=SHORTCUT, agree="broken",
             where="site:B")  # fmt: skip
    _no_exception(at)
    assert at.button(key="slice:chip:0").label == "site = B"  # the slice bar, at the top
    assert any(f"{inside.sum()} of {len(inside)} images" in c.value for c in at.caption)
    counts = {
        b.label.rsplit(": ", 1)[0]: int(b.label.rsplit(": ", 1)[1])
        for b in at.button if b.key and b.key.startswith("agree-")
    }  # fmt: skip
    assert counts == want
    p = binomtest(int(fixed.sum()), int(fixed.sum() + broken.sum()), 0.5).pvalue
    assert at.metric[0].value == f"{p:.3g}"
    assert any(f"{Agreement.BROKEN.label}: {broken.sum()} images" == s.value for s in at.subheader)
    shown = card_paths(at)
    assert len(shown) == 12 and set(shown) <= set(table["path"][broken].astype(str))
    full = at.dataframe[-1].value.set_index("class").loc[CLASSES]  # "All 5 classes"
    true = table["true"].to_numpy()
    assert full["support"].tolist() == [(inside & (true == k)).sum() for k in range(5)]
    recall_b = [right_b[inside & (true == k)].mean() for k in range(len(CLASSES))]
    assert np.allclose(full["recall_b"], recall_b)


def test_a_slice_groups_deep_link_opens_exactly_its_broken_images(
    project: Path, gates: dict[str, Gate], monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """``check``'s link to the slice group "site = B" (a regression of the shortcut model)
    opens that group's newly broken images, in Gate.rows order, on every page, in the
    two-model view and in the N-checkpoint view (its heatmap cell outlined)."""
    gate = gates[SHORTCUT]
    inside = _site(project, "site", "B")
    assert gate.table.set_index("name").loc["site = B", "verdict"] == "regression"
    rows = gate.rows("slice", "site = B")
    right_a, right_b = _right(project, CLEAN), _right(project, SHORTCUT)
    assert sorted(rows) == list(np.flatnonzero(inside & right_a & ~right_b))
    link = group_link(gate, "slice", "site = B", "regression")
    params = dict(parse_qsl(urlsplit(link).query))
    assert params["group"] == "slice:site = B" and params["agree"] == "broken"
    pages = -(-len(rows) // 12)
    for page in (1, pages):
        at = run(COMPARE, project, monkeypatch, **params, page=str(page))
        _no_exception(at)
        assert any(f"slice site = B: {len(rows)} images" in s.value for s in at.subheader)
        want = gate.comparison.paths[rows][(page - 1) * 12 : page * 12]
        assert card_paths(at) == [str(p) for p in want]
    at = run(COMPARE, project, monkeypatch, **params, candidates=[SHORTCUT, CONVNET])
    _no_exception(at)
    assert card_paths(at) == [str(p) for p in gate.comparison.paths[rows][:12]]
    (shape,) = _figures(at)[0]["layout"]["shapes"]
    r = _names(gate).index("slice: site = B")
    assert (shape["x0"] + 0.5, shape["y0"] + 0.5) == (0, r)


def test_a_slice_restricts_every_group_of_the_heatmap(
    project: Path, gates: dict[str, Gate], monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    inside = _site(project, "site", "B")
    at = run(COMPARE, project, monkeypatch, model=CLEAN, candidates=[SHORTCUT, CONVNET],
             where="site:B")  # fmt: skip
    _no_exception(at)
    heatmap = _figures(at)[0]
    labels = heatmap["layout"]["yaxis"]["ticktext"]
    assert "slice: site = B" in labels and "slice: site = A" not in labels  # none of A in B
    cells = {(item[0], item[2]): item for item in heatmap["data"][2]["customdata"]}
    true = results(load_config(project), CLEAN, DATASET).predictions["true"].to_numpy()
    right_a = _right(project, CLEAN)
    s2 = _site(project, "scanner", "S2")
    groups = {"overall": inside, "square": inside & (true == 2), "scanner = S2": inside & s2}
    for model in (SHORTCUT, CONVNET):
        right_b = _right(project, model)
        for name, members in groups.items():
            item = cells[(model, name)]
            broken = int((members & right_a & ~right_b).sum())
            fixed = int((members & ~right_a & right_b).sum())
            assert item[4] == members.sum() and (item[8], item[9]) == (broken, fixed)
            p = binomtest(fixed, broken + fixed, 0.5).pvalue if broken + fixed else 1.0
            assert item[11] == pytest.approx(p)
        sliced = gates[model].subset(inside)  # Holm over the groups left in the slice
        verdicts = [cells[(model, n)][12] for n in sliced.table["name"]]
        assert verdicts == list(sliced.table["verdict"])


def test_a_saved_slice_is_a_group_of_the_heatmap(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = load_config(project)
    store = SavedSlices(NotesStore(config.notes_db))
    key = dataset_key(config.dataset(DATASET))
    store.save(key, "B on S2", "site:B;scanner:S2", "Ada")
    try:
        at = run(COMPARE, project, monkeypatch, model=CLEAN, candidates=[SHORTCUT, CONVNET])
        _no_exception(at)
        heatmap = _figures(at)[0]
        labels = heatmap["layout"]["yaxis"]["ticktext"]
        assert labels[1 + len(CLASSES)] == "slice: B on S2"  # the saved slices come first
        members = _site(project, "site", "B") & _site(project, "scanner", "S2")
        cells = {(item[0], item[2]): item for item in heatmap["data"][2]["customdata"]}
        assert cells[(SHORTCUT, "B on S2")][4] == members.sum()
    finally:
        store.remove(key, "B on S2", "Ada")


@pytest.mark.parametrize("candidates", [{"model_b": SHORTCUT}, {"candidates": [SHORTCUT, CONVNET]}])
def test_a_slice_with_no_image_says_so(project: Path, candidates: dict, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    stars = results(load_config(project), CLEAN, DATASET).predictions["true"].to_numpy() == 3
    assert not (stars & _site(project, "site", "A")).any()  # every star came from site B
    at = run(COMPARE, project, monkeypatch, model=CLEAN, where="site:A;class:star", **candidates)
    _no_exception(at)
    assert any("No compared image is in this slice" in i.value for i in at.info)
    assert not _figures(at) and not card_paths(at)
