"""Slices: typed metadata, image properties, the slice table and the URL form of a slice.

Expectations come from the data: pandas groupby for the table's counts, scipy for the Wilson
intervals, OpenCV and NumPy (computed here on the same pixels) for the image properties.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import binomtest

from core.analysis.slices import Condition, Slice, SliceError, slice_table, wilson_interval
from core.config import DatasetSpec, load_config
from core.data.datasets import open_dataset
from core.data.metadata import MISSING, Column, ColumnSet, read_column_set
from core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "sample_models" / "shapes"
SHAPE_CLASSES = ["circle", "cross", "square", "star", "triangle"]


def _epoch(text: str) -> float:
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


# ------------------------------------------------------------------------------ metadata


def test_manifest_columns_are_typed_metadata_with_missing_values(tmp_path: Path) -> None:
    root = tmp_path / "set"
    (root / "a").mkdir(parents=True)
    lines = ["path,label,site,dose,when,flag,note"]
    cells = [
        ("B", "1.5", "2024-03-01T10:00:00", "yes", "x"),
        ("A", "", "2024-03-02", "no", "y"),
        (" B ", "n/a", "", "yes", "x"),
        ("", "2", "2024-03-03T00:00:00+02:00", "no", "z"),
    ] + [("C", str(i), "2024-04-01T12:30:00", "no", "w") for i in range(40)]
    for i, (site, dose, when, flag, note) in enumerate(cells):
        Image.new("L", (4, 4)).save(root / "a" / f"{i}.png")
        lines.append(f"a/{i}.png,cat,{site},{dose},{when},{flag},{note}")
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    dataset = open_dataset(DatasetSpec("d", root, csv=root / "m.csv"))
    meta = dataset.metadata
    assert meta.names == ["site", "dose", "when", "flag", "note"]
    assert [meta[n].kind for n in meta.names] == [
        "categorical", "numeric", "timestamp", "categorical", "categorical",
    ]  # fmt: skip
    site = meta["site"]
    assert site.categories == ("A", "B", "C")  # blanks trimmed; a blank cell is missing
    assert [site.categories[c] if c >= 0 else None for c in site.values[:4]] == [
        "B", "A", "B", None,
    ]  # fmt: skip
    dose = np.asarray(meta["dose"].values)
    assert dose[0] == 1.5 and dose[3] == 2 and np.isnan(dose[1]) and np.isnan(dose[2])
    when = np.asarray(meta["when"].values)
    expected = [_epoch("2024-03-01T10:00:00"), _epoch("2024-03-02"), np.nan]
    np.testing.assert_array_equal(when[:3], expected)
    assert when[3] == _epoch("2024-03-03T00:00:00+02:00")
    assert (
        dataset.fingerprint()
        == open_dataset(DatasetSpec("d", root, csv=root / "m.csv")).fingerprint()
    )


def test_a_metadata_file_joins_an_image_folder_by_path(
    tmp_path: Path, make_image_folder, write_config
) -> None:
    root = make_image_folder({"a": 2, "b": 2})
    others = "".join(f"not/listed{i}.png,Z,{i}\n" for i in range(40))  # numbers, mostly
    (tmp_path / "meta.csv").write_text(
        "path,site,age\nb/001.png,B,7\n./a/000.png,A,x\n" + others + "b/000.png,B,\n"
    )
    config = write_config(
        f"""
        [[models]]
        name = "m"
        architecture = "resnet18"
        weights = "w.pt"
        [[datasets]]
        name = "d"
        root = "{root.as_posix()}"
        metadata = "meta.csv"
        """
    )
    spec = load_config(config).dataset("d")
    assert spec.metadata == (tmp_path / "meta.csv").resolve()
    meta = open_dataset(spec).metadata  # rows: a/000, a/001, b/000, b/001
    site = meta["site"]
    assert [site.categories[c] if c >= 0 else None for c in site.values] == ["A", None, "B", "B"]
    # one text cell among numbers is missing, as is a blank and an image the file lacks
    np.testing.assert_array_equal(meta["age"].values, [np.nan, np.nan, np.nan, 7.0])
    assert meta["age"].kind == "numeric"


def test_metadata_key_errors(tmp_path: Path, make_image_folder, write_config) -> None:
    root = make_image_folder({"a": 1})
    head = '[[models]]\nname = "m"\narchitecture = "resnet18"\nweights = "w.pt"\n'
    bad = write_config(
        head + '[[datasets]]\nname = "d"\nparquet = ["x.parquet"]\nmetadata = "m.csv"\n'
    )
    with pytest.raises(ConfigError, match="metadata"):
        load_config(bad)
    (tmp_path / "m.csv").write_text("file,site\na/000.png,A\n")
    with pytest.raises(Exception, match="needs a path column"):
        open_dataset(DatasetSpec("d", root, metadata=tmp_path / "m.csv"))


def test_a_parquet_split_s_columns_are_its_metadata() -> None:
    config = load_config(REPO / "sample_models" / "config.toml")
    table = open_dataset(config.dataset("shapes-test (parquet)"))
    folder = open_dataset(config.dataset("shapes-test"))
    assert table.metadata.names == ["site", "scanner", "captured"]  # not image, not label
    assert table.metadata["captured"].kind == "timestamp"
    for name in table.metadata.names:  # row i of the split is image i of the folder
        mine, theirs = table.metadata[name], folder.metadata[name]
        assert mine.categories == theirs.categories
        np.testing.assert_array_equal(mine.values, theirs.values)


# ------------------------------------------------------------------------------ properties


@pytest.fixture(scope="module")
def measured(tmp_path_factory, sample_config):  # type: ignore[no-untyped-def]
    """Images of several sizes, formats and colours evaluated by the shapes ResNet."""
    from core.data.models import load_model
    from core.results.evaluate import evaluate

    root = tmp_path_factory.mktemp("props") / "images"
    rng = np.random.default_rng(3)
    for i, name in enumerate(SHAPE_CLASSES):
        (root / name).mkdir(parents=True)
        colour = rng.integers(0, 256, (48 + 8 * i, 80 - 6 * i, 3), dtype=np.uint8)
        Image.fromarray(colour).save(root / name / "colour.png")
        grey = np.repeat(rng.integers(0, 256, (64, 64, 1), dtype=np.uint8), 3, axis=2)
        Image.fromarray(grey).save(root / name / "grey.png")
        Image.fromarray(colour).save(root / name / "photo.jpg", quality=90)
    spec = sample_config.model("shapes-resnet (shortcut)")
    dataset = open_dataset(DatasetSpec("p", root), spec.classes)
    result = evaluate(load_model(spec), dataset, out=root.parent / "result", num_workers=0)
    return root, result


def test_properties_are_what_opencv_measures_on_the_model_s_pixels(measured) -> None:
    import cv2
    import torch
    from torchvision.transforms import v2

    from core.results.columns import result_properties

    root, result = measured
    props = result_properties(result)
    assert props.names == [
        "width", "height", "aspect_ratio", "file_size", "format",
        "brightness", "contrast", "sharpness", "grayscale",
    ]  # fmt: skip
    paths = result.manifest.column("path").to_pylist()
    for row, rel in enumerate(paths):
        rgb = np.array(Image.open(root / rel).convert("RGB"))
        height, width = rgb.shape[:2]
        tensor = torch.from_numpy(rgb).permute(2, 0, 1)
        if (height, width) != (64, 64):
            tensor = v2.functional.resize(tensor, [64, 64], antialias=True)
        seen = np.ascontiguousarray(tensor.permute(1, 2, 0).numpy())  # what the model got
        luma = cv2.cvtColor(seen, cv2.COLOR_RGB2GRAY)
        lap = cv2.Laplacian(luma, cv2.CV_64F)
        spread = int((seen.max(axis=2).astype(int) - seen.min(axis=2).astype(int)).max())
        expected = {
            "width": width,
            "height": height,
            "aspect_ratio": width / height,
            "file_size": os.stat(root / rel).st_size,
            "brightness": luma.mean() / 255,
            "contrast": luma.std() / 255,
            "sharpness": np.var(lap),
        }
        for name, value in expected.items():
            assert props[name].values[row] == pytest.approx(value, rel=1e-9), (rel, name)
        fmt = props["format"]
        assert fmt.categories[fmt.values[row]] == ("jpeg" if rel.endswith(".jpg") else "png")
        gray = props["grayscale"]
        assert gray.categories[gray.values[row]] == ("yes" if spread <= 2 else "no")
        assert (gray.categories[gray.values[row]] == "yes") == rel.endswith("grey.png")


def test_the_ray_engine_measures_and_writes_the_same_properties(measured, sample_config) -> None:
    """decode_batch measures what the in-process engine measures; the model actor passes the
    properties through and the driver writes them (without starting Ray)."""
    import pyarrow as pa

    from core.data.properties import PROPERTIES
    from core.results.ray_engine import ModelActor, _write
    from core.results.ray_engine import decode_batch as decode
    from core.results.store import ResultWriter

    root, local = measured
    spec = sample_config.model("shapes-resnet (shortcut)")
    rows = np.arange(len(local.manifest))
    manifest = pa.table(
        {
            "row": rows,
            "path": local.manifest.column("path"),
            "label": local.manifest.column("label").cast(pa.int64()),
        }
    )
    decoded = decode(manifest, str(root), 3, spec.input_size, properties=True)
    np.testing.assert_array_equal(decoded["properties"], local.columns["properties"])
    table = ModelActor(spec, None, None, threads=1)(decoded)
    dataset = open_dataset(DatasetSpec("p", root), spec.classes)
    folder = root.parent / "ray-written"
    pairs = list(zip(dataset.paths, dataset.labels.tolist(), strict=True))
    with ResultWriter(folder, pairs, SHAPE_CLASSES, "k", properties=PROPERTIES) as writer:
        _write(writer, dataset, table, None)
        written = writer.finish()
    np.testing.assert_array_equal(written.columns["properties"], local.columns["properties"])


# ------------------------------------------------------------------------------ slices


def _columns(n: int = 5000, seed: int = 0) -> tuple[ColumnSet, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    site = rng.integers(-1, 4, n).astype(np.int32)  # -1: missing
    dose = rng.normal(10, 3, n)
    dose[rng.random(n) < 0.05] = np.nan
    width = rng.choice([32.0, 64.0, 128.0], n)
    when = 1.7e9 + rng.uniform(0, 90 * 86_400, n)
    columns = ColumnSet(
        [
            Column("site", "categorical", site, ("A", "B", "C", "D")),
            Column("dose", "numeric", dose),
            Column("width", "numeric", width),
            Column("when", "timestamp", when),
        ]
    )
    true = rng.integers(0, 3, n)
    wrong = rng.random(n) < np.where(site == 1, 0.5, 0.1)
    pred = np.where(wrong, (true + 1) % 3, true)
    return columns, true, pred


def _frame(columns: ColumnSet) -> pd.DataFrame:
    out = {}
    for column in columns:
        values = np.asarray(column.values)
        if column.numeric:
            out[column.name] = values
        else:
            out[column.name] = pd.Series(np.array(column.categories, object)[values]).where(
                values >= 0, MISSING
            )
    return pd.DataFrame(out)


def test_table_counts_equal_pandas_groupby() -> None:
    columns, true, pred = _columns()
    table = slice_table(columns, true, pred)
    frame = _frame(columns).assign(error=true != pred)
    site = table[table.column == "site"].set_index("value")
    expected = frame.groupby("site")["error"].agg(["size", "sum"])
    assert sorted(site.index) == sorted(expected.index)
    np.testing.assert_array_equal(site.loc[expected.index, "images"], expected["size"])
    np.testing.assert_array_equal(site.loc[expected.index, "errors"], expected["sum"])
    widths = table[table.column == "width"]  # three values: a row per value
    assert widths["value"].tolist() == ["32", "64", "128"]
    np.testing.assert_array_equal(
        widths["images"], frame.groupby("width").size().loc[[32.0, 64.0, 128.0]]
    )
    for name in ("dose", "when"):  # quantile bins: pd.cut on the table's own edges
        rows = table[table.column == name]
        ranges = [v for v in rows["value"] if v != MISSING]
        edges = [Condition(name, v).bounds(columns[name])[0] for v in ranges[1:]]
        bins = pd.cut(frame[name], [-np.inf, *edges, np.inf], right=False)
        expected = frame.groupby(bins, observed=False)["error"].agg(["size", "sum"])
        np.testing.assert_array_equal(rows["images"].to_numpy()[: len(ranges)], expected["size"])
        np.testing.assert_array_equal(rows["errors"].to_numpy()[: len(ranges)], expected["sum"])
        assert 3 <= len(ranges) <= 5
        if name == "dose":
            assert rows["value"].iloc[-1] == MISSING
            assert rows["images"].iloc[-1] == frame[name].isna().sum()
    assert table["images"].groupby(table["column"]).sum().eq(len(true)).all()


def test_every_row_s_param_selects_its_images() -> None:
    columns, true, pred = _columns()
    table = slice_table(columns, true, pred)
    for row in table.itertuples():
        mask = Slice.parse(row.param).mask(columns)
        assert mask.sum() == row.images, row.param
        assert (true[mask] != pred[mask]).sum() == row.errors, row.param


def test_wilson_intervals_are_scipy_s_and_flags_and_order_follow() -> None:
    columns, true, pred = _columns()
    table = slice_table(columns, true, pred)
    for row in table.itertuples():
        ci = binomtest(row.images - row.errors, row.images).proportion_ci(0.95, "wilson")
        assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    overall = (true == pred).mean()
    assert (table["below"] == (table["ci_high"] < overall)).all()
    assert table.loc[table.value == "B", "below"].item()  # site B: five times the errors
    spreads = table.groupby("column", sort=False)["spread"].first()
    assert spreads.index[0] == "site"
    assert list(spreads) == sorted(spreads, reverse=True)
    for k, n in [(0, 10), (10, 10), (3, 7), (500, 1000)]:
        low, high = wilson_interval(k, n)
        ci = binomtest(k, n).proportion_ci(0.95, "wilson")
        assert (float(low), float(high)) == pytest.approx((ci.low, ci.high), abs=1e-12)


@pytest.mark.parametrize(
    "param",
    [
        "site:B",
        "brightness:0.1..0.3",
        "brightness:..0.1",
        "sharpness:250..",
        "site:B;brightness:0.1..0.3",
        "captured:2024-03-01T10:30..2024-04-01",
        "site:(missing)",
        "note:a\\;b",
        "odd\\:name:x",
        "width:64",
    ],
)
def test_a_slice_param_round_trips(param: str) -> None:
    parsed = Slice.parse(param)
    assert parsed.to_param() == param
    assert Slice.from_param(param) == parsed


def test_slice_values_and_labels() -> None:
    both = Slice.parse("site:B;brightness:0.1..0.3")
    assert [(c.column, c.value) for c in both.conditions] == [
        ("site", "B"),
        ("brightness", "0.1..0.3"),
    ]
    assert Slice.parse("note:a\\;b").conditions[0].value == "a;b"
    assert Slice.parse("odd\\:name:x").conditions[0].column == "odd:name"
    assert Slice.of(site="B", brightness=(0.1, 0.3)) == both
    assert Slice.of(width=(None, 64)).to_param() == "width:..64"
    assert both.label() == "site = B · brightness 0.1 – 0.3"
    assert both.without("site") == Slice.parse("brightness:0.1..0.3")
    assert Slice.parse("site:B").without("site") is None


@pytest.mark.parametrize("param", ["", "site", ":B", "site:", ";;", "a:1..2..3", "a:..", "a:1;a:2"])
def test_bad_params_are_none_or_a_clear_error(param: str) -> None:
    assert Slice.from_param(param) is None
    with pytest.raises(SliceError) as info:
        Slice.parse(param)
    assert "\n" not in str(info.value) and str(info.value)


def test_masks_and_their_errors() -> None:
    columns, _, _ = _columns()
    frame = _frame(columns)
    mask = Slice.parse("site:B;dose:8..12").mask(columns)
    expected = (frame.site == "B") & (frame.dose >= 8) & (frame.dose < 12)
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(Slice.parse("dose:(missing)").mask(columns), frame.dose.isna())
    np.testing.assert_array_equal(Slice.parse("width:64").mask(columns), frame.width == 64)
    day = _epoch("2023-11-20")
    np.testing.assert_array_equal(
        Slice.parse("when:2023-11-20..").mask(columns), frame["when"] >= day
    )
    for bad, words in [
        ("nosuch:1", "no column 'nosuch'"),
        ("site:Z", "site has no value 'Z'"),
        ("dose:high", "not a number"),
        ("when:yesterday..", "not a date"),
    ]:
        with pytest.raises(SliceError, match=words):
            Slice.parse(bad).mask(columns)


# ------------------------------------------------------------------------------ stored


def test_metadata_is_saved_with_the_result_and_follows_its_file(
    tmp_path: Path, sample_config
) -> None:
    from core.data.models import load_model
    from core.results.columns import metadata_folder, result_metadata
    from core.results.evaluate import evaluate

    root = tmp_path / "shapes"
    shutil.copytree(SHAPES / "test" / "circle", root / "circle")
    for name in SHAPE_CLASSES[1:]:
        (root / name).mkdir()
    shutil.copy2(SHAPES / "test" / "sites.csv", tmp_path / "sites.csv")
    spec = sample_config.model("shapes-resnet (shortcut)")
    dataset_spec = DatasetSpec("s", root, metadata=tmp_path / "sites.csv")
    dataset = open_dataset(dataset_spec, spec.classes)
    result = evaluate(load_model(spec), dataset, out=tmp_path / "result", num_workers=0)
    stored = read_column_set(metadata_folder(result))
    assert stored is not None
    assert stored[0].names == ["site", "scanner", "captured"]
    np.testing.assert_array_equal(stored[0]["site"].values, dataset.metadata["site"].values)
    assert result_metadata(result)["site"].categories == dataset.metadata["site"].categories

    sites = pd.read_csv(tmp_path / "sites.csv")
    sites["site"] = "Z"
    sites.to_csv(tmp_path / "sites.csv", index=False)
    changed = open_dataset(dataset_spec, spec.classes)
    assert changed.fingerprint() == dataset.fingerprint()  # no new evaluation
    fresh = result_metadata(result, changed)
    assert fresh["site"].categories == ("Z",)
    assert read_column_set(metadata_folder(result))[0]["site"].categories == ("Z",)


@pytest.fixture(scope="module")
def shapes_config(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """The shapes-test entry of the sample with its metadata, its cache in a temporary folder."""
    folder = tmp_path_factory.mktemp("shapes")
    shutil.copy2(REPO / "sample_models" / "shapes_models.py", folder / "shapes_models.py")
    text = f"""
cache_dir = "cache"
[[models]]
name = "shapes-resnet (shortcut)"
factory = "shapes_models:resnet_shapes"
weights = "{(SHAPES / "resnet_shortcut.safetensors").as_posix()}"
input_size = [64, 64]
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]
classes = {json.dumps(SHAPE_CLASSES)}
[[datasets]]
name = "shapes-test"
root = "{(SHAPES / "test").as_posix()}"
metadata = "{(SHAPES / "test" / "sites.csv").as_posix()}"
"""
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_cli_prints_the_table_and_found_slices_as_json(shapes_config: Path, capsys) -> None:
    from core.cli import main

    config = shapes_config
    assert main(["slices", "--config", str(config), "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert len(entries) == 20
    assert set(entries[0]) >= {"slice", "images", "errors", "accuracy", "ci"}
    accuracies = [e["accuracy"] for e in entries]
    assert accuracies == sorted(accuracies)  # worst first
    for entry in entries:
        assert entry["ci"][0] <= entry["accuracy"] <= entry["ci"][1]
        assert len(entry["slice"]) == 1
    assert main(["slices", "--config", str(config), "--json", "--by", "site", "--top", "5"]) == 0
    sites = json.loads(capsys.readouterr().out)
    assert [e["slice"] for e in sites] == [{"site": "B"}, {"site": "C"}, {"site": "A"}]
    assert main(["slices", "--config", str(config), "--find", "--json", "--top", "3"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert 1 <= len(found) <= 3 and all("score" in e for e in found)
    assert [e["score"] for e in found] == sorted((e["score"] for e in found), reverse=True)
    assert main(["slices", "--config", str(config), "--by", "nosuch"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the cache's note
    assert error.startswith("error: no column 'nosuch'")
    assert "Traceback" not in error


def test_the_export_carries_metadata_and_properties(
    tmp_path: Path, shapes_config: Path, capsys
) -> None:
    from core.cli import main

    config = shapes_config
    out = tmp_path / "table.csv"
    assert main(["evaluate", "--config", str(config), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    sites = pd.read_csv(SHAPES / "test" / "sites.csv")
    merged = table.merge(sites, on="path", suffixes=("", "_file"))
    assert len(merged) == len(table) == 400
    assert (merged["site"] == merged["site_file"]).all()
    assert {"brightness", "sharpness", "width", "format", "grayscale"} <= set(table.columns)
    assert (table["width"] == 64).all() and (table["format"] == "png").all()
    capsys.readouterr()
