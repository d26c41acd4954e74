"""``python -m core check``, the regression gate, and ``core.analysis.regression`` beneath it.

On the shapes sample, the shortcut ResNet (candidate) against the same recipe trained without
the mark (baseline): every expectation is derived in the test from the two results' arrays,
paired with pandas and tested with scipy's ``binomtest`` and Holm's method written out as a
loop, independent of the module's vectorised code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import binomtest

from core.analysis.comparison import Agreement
from core.analysis.regression import (
    NotComparableError,
    changes_table,
    check_many,
    check_results,
    group_counts,
    holm,
    mcnemar_p,
)
from core.cli import main
from core.cli.common import results
from core.config import load_config
from core.errors import UserFacingError
from core.results import BatchScores, ResultWriter

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_models"
CLEAN, SHORTCUT = "shapes-resnet (clean)", "shapes-resnet (shortcut)"
REORDERED = "shapes-resnet (classes reordered)"
DATASET = "shapes-test"
CLASSES = ["circle", "cross", "square", "star", "triangle"]
ALPHA, MIN_DROP = 0.05, 0.01


def _model(name: str, weights: str, classes: list[str]) -> str:
    return f"""
[[models]]
name = "{name}"
factory = "shapes_models:resnet_shapes"
weights = "{(SAMPLE / "shapes" / weights).as_posix()}"
input_size = [64, 64]
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]
classes = {json.dumps(classes)}
datasets = ["{DATASET}"]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's two shapes ResNets (and the clean one with its classes in another order),
    with the cache in a temporary folder."""
    folder = tmp_path_factory.mktemp("check")
    (folder / "shapes_models.py").write_bytes((SAMPLE / "shapes_models.py").read_bytes())
    reordered = [CLASSES[1], CLASSES[0], *CLASSES[2:]]
    text = (
        'cache_dir = "cache"\n'
        + _model(SHORTCUT, "resnet_shortcut.safetensors", CLASSES)
        + _model(CLEAN, "resnet_clean.safetensors", CLASSES)
        + _model(REORDERED, "resnet_clean.safetensors", reordered)
        + f'\n[[datasets]]\nname = "{DATASET}"\nroot = "{(SAMPLE / "shapes/test").as_posix()}"\n'
    )
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _check(project: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["check", "--config", str(project), *args])
    out, err = capsys.readouterr()
    return code, out, err


def _json(project: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code, out, _ = _check(project, capsys, *args, "--json")
    return code, json.loads(out)


def _names(entries: list[dict]) -> set[str]:
    return {f"{e['group']}:{e['name']}" for e in entries}


@pytest.fixture(scope="module")
def expected(project: Path) -> pd.DataFrame:
    """Per group, from the stored arrays: n, broken, fixed, McNemar p (scipy), Holm by hand,
    verdict; baseline = clean, candidate = shortcut."""
    config = load_config(project)
    a, b = (results(config, name, DATASET).predictions for name in (CLEAN, SHORTCUT))
    pairs = a[["path", "true", "pred"]].merge(b[["path", "pred"]], on="path", suffixes=("_a", "_b"))
    assert len(pairs) == len(a) == len(b)
    right_a, right_b = pairs.pred_a == pairs.true, pairs.pred_b == pairs.true
    groups = {"overall:overall": np.ones(len(pairs), bool)}
    groups |= {f"class:{c}": (pairs.true == i).to_numpy() for i, c in enumerate(CLASSES)}
    rows = []
    for name, m in groups.items():
        broken = int((right_a & ~right_b)[m].sum())
        fixed = int((~right_a & right_b)[m].sum())
        p = binomtest(fixed, broken + fixed, 0.5).pvalue if broken + fixed else 1.0
        rows.append((name, int(m.sum()), broken, fixed, p, right_a[m].mean(), right_b[m].mean()))
    table = pd.DataFrame(rows, columns=["group", "n", "broken", "fixed", "p_raw", "acc_a", "acc_b"])
    order = np.argsort(table.p_raw.to_numpy(), kind="stable")
    adjusted, running = np.empty(len(table)), 0.0
    for rank, i in enumerate(order):  # Holm, step down
        running = max(running, min(1.0, (len(table) - rank) * table.p_raw[i]))
        adjusted[i] = running
    table["p"] = adjusted
    drop = table.acc_a - table.acc_b
    table["verdict"] = np.select(
        [(table.p < ALPHA) & (drop >= MIN_DROP), (table.p < ALPHA) & (-drop >= MIN_DROP)],
        ["regression", "improvement"],
        "",
    )
    print(table.to_string())  # the measured p-values, for the record
    return table.set_index("group")


# -- the statistics -------------------------------------------------------------------------


def test_holm_matches_a_hand_computed_example() -> None:
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> max so far 0.06
    p = np.array([0.01, 0.04, 0.03, 0.005])
    assert np.allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(holm(np.array([0.5, 0.6, 0.2])), [1.0, 1.0, 0.6])  # capped at 1
    assert np.allclose(holm(np.array([0.02, 0.02])), [0.04, 0.04])  # ties
    assert holm(np.array([])).shape == (0,)


def test_mcnemar_matches_scipy_binomtest_on_hand_made_pairs() -> None:
    pairs = [(0, 0), (0, 1), (1, 0), (3, 3), (17, 0), (24, 3), (11, 2), (55, 26), (1, 17)]
    pairs += [(b, c) for b in range(0, 40, 3) for c in range(0, 40, 7)]
    broken, fixed = np.array(pairs).T
    ours = mcnemar_p(broken, fixed)
    reference = [binomtest(c, b + c, 0.5).pvalue if b + c else 1.0 for b, c in pairs]
    assert np.allclose(ours, reference, rtol=1e-9, atol=0)
    assert mcnemar_p(np.array([5]), np.array([2]))[0] == mcnemar_p(np.array([2]), np.array([5]))[0]


def test_group_counts_per_class_and_slice() -> None:
    true = np.array([0, 0, 0, 1, 1, 2])
    right_a = np.array([1, 1, 0, 1, 0, 1], bool)
    right_b = np.array([0, 1, 1, 1, 0, 1], bool)
    slices = {"first half": np.arange(6) < 3, "empty": np.zeros(6, bool)}
    table = group_counts(true, right_a, right_b, ["a", "b", "c", "d"], slices=slices)
    got = table.set_index(["group", "name"])
    assert list(got.index) == [("overall", "overall"), ("class", "a"), ("class", "b"),
                               ("class", "c"), ("slice", "first half")]  # fmt: skip
    assert got.loc[("class", "a")].tolist() == [3, 2, 2, 1, 1]  # n, right a/b, broken, fixed
    assert got.loc[("overall", "overall")].tolist() == [6, 4, 4, 1, 1]
    assert got.loc[("slice", "first half")].tolist() == [3, 2, 2, 1, 1]


def _result(folder: Path, labels: list[int], pred: list[int], classes: list[str], skip: int = -1):  # type: ignore[no-untyped-def]
    """A tiny stored result of x/0.png, x/1.png, ... (row ``skip`` unreadable)."""
    rows = np.array([i for i in range(len(labels)) if i != skip])
    p = np.asarray(pred, np.int32)[rows]
    ones = np.ones(len(rows), np.float32)
    meta = {"model": folder.name, "dataset": "tiny"}
    manifest = [(f"x/{i}.png", label) for i, label in enumerate(labels)]
    with ResultWriter(folder, manifest, classes, folder.name, meta=meta, durable=False) as w:
        w.write(
            BatchScores(rows, p, ones, ones, ones, p, ones, np.zeros((len(rows), len(classes))))
        )
        if skip >= 0:
            w.skip(skip, f"x/{skip}.png", "unreadable")
        return w.finish()


def test_results_that_cannot_be_paired_are_refused(tmp_path: Path) -> None:
    labels = [0, 0, 0, 1, 1, 1]
    base = _result(tmp_path / "base", labels, labels, ["x", "y"])
    worse = _result(tmp_path / "worse", labels, [1, 1, 1, 1, 1, 1], ["x", "y"])
    other = _result(tmp_path / "other", labels, labels, ["y", "x"])
    fewer = _result(tmp_path / "fewer", labels[:5], labels[:5], ["x", "y"])
    skipped = _result(tmp_path / "skipped", labels, labels, ["x", "y"], skip=2)
    gate = check_results(base, worse, alpha=0.99)
    assert gate.table.set_index("name").loc["x", ["broken", "fixed"]].tolist() == [3, 0]
    with pytest.raises(NotComparableError, match="classes differ"):
        check_results(base, other)
    with pytest.raises(NotComparableError, match=r"not the same images.*x/5\.png"):
        check_results(base, fewer)  # another listing: paired by path
    with pytest.raises(NotComparableError, match=r"1 only in the first.*x/2\.png"):
        check_results(base, skipped)  # the same listing: paired by row
    with pytest.raises(UserFacingError, match="slice 'short'"):
        check_results(base, worse, slices={"short": np.ones(4, bool)})
    with pytest.raises(UserFacingError, match="unknown group kind"):
        check_results(base, worse, by=["pattern"])


# -- the gate on the shapes sample ----------------------------------------------------------


def test_shortcut_candidate_regresses_where_the_mark_pulls_to_star(
    project: Path, expected: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _check(project, capsys, "--baseline", CLEAN, "--candidate", SHORTCUT)
    assert code == 1
    regressed = set(expected.index[expected.verdict == "regression"])
    assert "overall:overall" in regressed and "class:circle" not in regressed
    assert len(regressed) >= 2
    head, _, rest = out.partition("REGRESSIONS")
    shown, _, _ = rest.partition("improvements")
    for name in regressed:  # the readable table names each regression
        assert re.search(rf"^\s*{name.split(':')[0]}\s+{name.split(':')[1]}\s", shown, re.M)
    assert "class circle" not in " ".join(shown.split())
    assert "6 groups" in head

    code, found = _json(project, capsys, "--baseline", CLEAN, "--candidate", SHORTCUT)
    assert code == 1 and found["passed"] is False
    assert _names(found["regressions"]) == regressed
    assert _names(found["improvements"]) == set(expected.index[expected.verdict == "improvement"])
    for entry in found["regressions"]:
        row = expected.loc[f"{entry['group']}:{entry['name']}"]
        assert entry["n"] == row.n and entry["broken"] == row.broken
        assert entry["p"] == pytest.approx(row.p, rel=1e-9)
        assert entry["p_raw"] == pytest.approx(row.p_raw, rel=1e-9)
        assert entry["baseline"] == pytest.approx(row.acc_a)
        assert entry["candidate"] == pytest.approx(row.acc_b)


def test_regressed_classes_are_the_ones_the_mark_pulls_to_star(project: Path) -> None:
    """What the gate found is the shortcut: most images of each regressed class that the
    candidate broke, it now calls star."""
    config = load_config(project)
    gate = check_results(*(results(config, m, DATASET) for m in (CLEAN, SHORTCUT)))
    star = CLASSES.index("star")
    for name in gate.regressions.query("group == 'class'")["name"]:
        rows = gate.rows("class", name)
        assert len(rows) == gate.table.set_index("name").loc[name, "broken"]
        assert np.all(gate.comparison.cell[rows] == Agreement.BROKEN)
        assert np.all(gate.comparison.true[rows] == CLASSES.index(name))
        assert np.mean(gate.comparison.pred_b[rows] == star) > 0.5, name
    fixed = gate.rows("class", "star", Agreement.FIXED)
    assert len(fixed) and np.all(gate.comparison.pred_b[fixed] == star)


def test_swapped_call_names_star_as_its_one_regression(
    project: Path, expected: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    code, found = _json(project, capsys, "--baseline", SHORTCUT, "--candidate", CLEAN)
    assert code == 1
    assert _names(found["regressions"]) == {"class:star"}
    assert _names(found["regressions"]) == set(expected.index[expected.verdict == "improvement"])
    assert _names(found["improvements"]) == set(expected.index[expected.verdict == "regression"])


def test_a_model_against_itself_passes(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _check(project, capsys, "--baseline", CLEAN, "--candidate", CLEAN)
    assert code == 0 and "passed" in out
    code, found = _json(project, capsys, "--baseline", SHORTCUT, "--candidate", SHORTCUT)
    assert code == 0 and found["passed"] is True
    assert found["regressions"] == [] == found["improvements"]


def test_models_that_cannot_be_compared_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _check(project, capsys, "--baseline", CLEAN, "--candidate", REORDERED)
    assert code == 2 and out == ""
    assert "classes differ" in err and "class 0 is 'circle' vs 'cross'" in err
    code, _, err = _check(project, capsys, "--baseline", CLEAN, "--candidate", "nope")
    assert code == 2 and "nope" in err
    code, _, err = _check(project, capsys, "--baseline", CLEAN, "--candidate", CLEAN, "--by", "x")
    assert code == 2 and "--by" in err


def test_json_schema_and_links(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "https://models.example.com/gate"
    code, found = _json(project, capsys, "--baseline", CLEAN, "--candidate", SHORTCUT, "--url", url)
    assert code == 1
    assert isinstance(found["passed"], bool)
    for entry in found["regressions"] + found["improvements"]:
        assert set(entry) >= {"group", "name", "n", "baseline", "candidate", "p", "link"}
        assert entry["group"] in ("overall", "class", "slice")
        assert isinstance(entry["n"], int) and 0 <= entry["baseline"] <= 1 and 0 < entry["p"] < 1
        link = urlsplit(entry["link"])
        assert f"{link.scheme}://{link.netloc}{link.path}" == f"{url}/compare-models"
        query = {k: v[0] for k, v in parse_qs(link.query).items()}
        assert query["model"] == CLEAN and query["model_b"] == SHORTCUT
        assert query["dataset"] == DATASET
        assert query["agree"] == ("broken" if entry in found["regressions"] else "fixed")
        if entry["group"] != "overall":
            assert query["group"] == f"{entry['group']}:{entry['name']}"
    _, plain = _json(project, capsys, "--baseline", CLEAN, "--candidate", SHORTCUT)
    assert all(e["link"].startswith("compare-models?") for e in plain["regressions"])


def test_junit_has_one_testcase_per_group(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "reports" / "check.xml"
    code, found = _json(
        project, capsys, "--baseline", CLEAN, "--candidate", SHORTCUT, "--junit", str(report)
    )
    assert code == 1
    cases = ET.parse(report).getroot().findall(".//testcase")
    assert len(cases) == found["groups"] == 1 + len(CLASSES)
    names = {f"{c.get('classname').removeprefix('check.')}:{c.get('name')}" for c in cases}
    assert len(names) == len(cases)
    failed = {
        f"{c.get('classname').removeprefix('check.')}:{c.get('name')}"
        for c in cases
        if c.find("failure") is not None
    }
    assert failed == _names(found["regressions"])


def test_slices_are_groups_too(project: Path) -> None:
    """A boolean mask over the manifest is a "slice" group, tested with the others: the images
    that carry the mark (shapes/test/marks.csv)."""
    config = load_config(project)
    base, cand = (results(config, m, DATASET) for m in (CLEAN, SHORTCUT))
    marks = pd.read_csv(SAMPLE / "shapes" / "test" / "marks.csv")
    marked = set(marks.path[marks.marked == 1])
    paths = base.manifest.column("path").to_pylist()
    mask = np.array([p in marked for p in paths])
    gate = check_results(base, cand, slices={"marked": mask, "unmarked": ~mask})
    table = gate.table.set_index(["group", "name"])
    assert len(table) == 1 + len(CLASSES) + 2
    assert table.loc[("slice", "marked"), "n"] == mask.sum()
    right_a = base.pred[mask] == base.true[mask]
    right_b = cand.pred[mask] == cand.true[mask]
    assert table.loc[("slice", "marked"), "broken"] == (right_a & ~right_b).sum()
    assert table.loc[("slice", "marked"), "fixed"] == (~right_a & right_b).sum()
    assert len(gate.rows("slice", "marked")) == (right_a & ~right_b).sum()

    many = check_many(base, [cand, base])
    both = changes_table(many)
    assert list(many) == [SHORTCUT, CLEAN]
    wide = both.pivot(index=["group", "name"], columns="model", values="change")
    assert (wide[CLEAN] == 0).all()
    assert wide[SHORTCUT].loc[("overall", "overall")] == pytest.approx(
        gate.table.set_index("name").loc["overall", "change"]
    )


# -- docs/cli.md's pipeline -----------------------------------------------------------------


def _pipeline_steps() -> tuple[dict, list[str]]:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split("## `check`", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "docs/cli.md's check section shows one pipeline"
    pipeline = yaml.safe_load(blocks[0])
    job = next(iter(pipeline["jobs"].values()))
    runs = [s["run"] for s in job["steps"] if "python -m core check" in s.get("run", "")]
    return job, runs


def test_the_documented_pipeline_runs_and_fails_on_the_sample(
    project: Path, tmp_path: Path
) -> None:
    job, runs = _pipeline_steps()
    assert runs, "the pipeline runs python -m core check"
    env = {**job.get("env", {})}
    for script in runs:
        assert "sample_models/config.toml" in script
        done = subprocess.run(
            ["bash", "-e", "-c", script.replace("sample_models/config.toml", str(project))],
            cwd=tmp_path,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 1, done.stderr  # the docs say: this job fails on the sample
    verdict = json.loads((tmp_path / "reports" / "check.json").read_text(encoding="utf-8"))
    assert verdict["passed"] is False
    assert all(e["link"].startswith(env["DASHBOARD_URL"]) for e in verdict["regressions"])
    assert ET.parse(tmp_path / "reports" / "check.xml").getroot().findall(".//failure")
