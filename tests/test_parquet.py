"""Parquet and Arrow (save_to_disk) image datasets, as Hugging Face ``datasets`` writes them.

Tables are written here with pyarrow in ``datasets``' layout (an ``image`` struct {bytes, path},
a ``label`` column, the ClassLabel names in the schema's ``huggingface`` metadata); ``datasets``
itself is never imported. The sample's Parquet copy of shapes-test is checked against its folder.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from core.analysis.panels import PanelCache
from core.config import DatasetSpec, load_config
from core.data.datasets import dataset_key, open_dataset
from core.data.models import load_model
from core.data.parquet import TableDataset
from core.errors import ConfigError, DatasetError, ImageRefusedError
from core.results.evaluate import evaluate
from core.results.ray_engine import decode_batch
from tests.conftest import REPO, smooth_image

CLASSES = ["cat", "dog", "fox"]


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def hf_metadata(names: list[str] | None) -> dict[bytes, bytes]:
    features: dict[str, object] = {"image": {"_type": "Image"}}
    features["label"] = (
        {"names": names, "_type": "ClassLabel"} if names else {"dtype": "int64", "_type": "Value"}
    )
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def hf_table(
    images: list[bytes | None],
    labels: list[object],
    names: list[str] | None = CLASSES,
    paths: list[str | None] | None = None,
    image: str = "image",
    label: str = "label",
) -> pa.Table:
    cells = pa.StructArray.from_arrays(
        [pa.array(images, pa.binary()), pa.array(paths or [None] * len(images), pa.string())],
        ["bytes", "path"],
    )
    table = pa.table({image: cells, label: pa.array(labels)})
    return table.replace_schema_metadata(hf_metadata(names))


@pytest.fixture
def pictures() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [smooth_image(rng, (24, 32)) for _ in range(7)]


@pytest.fixture
def parquet_set(tmp_path: Path, pictures: list[np.ndarray]) -> Callable[..., DatasetSpec]:
    """Two shards under tmp_path/data (row groups of 2); returns their dataset entry."""

    def make(**table_args: object) -> DatasetSpec:
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        labels = [0, 2, 1, 1, 0, 2, 2]
        table = hf_table([png(p) for p in pictures], labels, **table_args)  # type: ignore[arg-type]
        pq.write_table(table.slice(0, 5), data / "test-00000-of-00002.parquet", row_group_size=2)
        pq.write_table(table.slice(5), data / "test-00001-of-00002.parquet", row_group_size=2)
        return DatasetSpec("hf", tmp_path, parquet=(str(data / "test-*.parquet"),))

    return make


def test_parquet_rows_named_by_file_and_row_with_classlabel_names(
    parquet_set: Callable[..., DatasetSpec], pictures: list[np.ndarray]
) -> None:
    dataset = open_dataset(parquet_set())
    assert isinstance(dataset, TableDataset)
    assert dataset.classes == CLASSES
    assert dataset.paths[:2] == ["test-00000-of-00002.parquet#0", "test-00000-of-00002.parquet#1"]
    assert dataset.paths[5] == "test-00001-of-00002.parquet#0"
    assert dataset.labels.tolist() == [0, 2, 1, 1, 0, 2, 2]
    for rel, picture in zip(dataset.paths, pictures, strict=True):
        assert np.array_equal(dataset.load(rel).permute(1, 2, 0).numpy(), picture)
        assert np.array_equal(np.asarray(dataset.image(rel, 3)), picture)
    # the model's class order is followed, labels mapped by name
    reordered = open_dataset(parquet_set(), ["fox", "cat", "dog"])
    assert reordered.classes == ["fox", "cat", "dog"]
    assert reordered.labels.tolist() == [1, 0, 2, 2, 1, 0, 0]
    with pytest.raises(DatasetError, match=r"\['fox'\] are not in the class list"):
        open_dataset(parquet_set(), ["cat", "dog"])


def test_string_labels_and_custom_columns(
    parquet_set: Callable[..., DatasetSpec], write_config: Callable[..., Path]
) -> None:
    parquet_set(names=None, image="img", label="species")
    config = write_config("""
        [[models]]
        name = "m"
        architecture = "resnet18"
        weights = "w.pt"
        [[datasets]]
        name = "hf"
        parquet = ["data/test-*.parquet"]
        image_column = "img"
        label_column = "species"
    """)
    spec = load_config(config).dataset("hf")
    assert open_dataset(spec).classes == ["0", "1", "2"]  # integers without ClassLabel names
    data = config.parent / "data"
    for shard in sorted(data.glob("*.parquet")):  # rewrite the labels as strings
        table = pq.read_table(shard)
        names = pa.array([CLASSES[i] for i in table["species"].to_pylist()])
        pq.write_table(table.set_column(1, "species", names), shard)
    dataset = open_dataset(spec)
    assert dataset.classes == CLASSES  # sorted names
    assert dataset.labels.tolist() == [0, 2, 1, 1, 0, 2, 2]
    default = DatasetSpec("hf", config.parent, parquet=spec.parquet)
    with pytest.raises(DatasetError, match=r"no column 'image'.*set image_column"):
        open_dataset(default)


def test_config_keys_are_checked(write_config: Callable[..., Path]) -> None:
    head = '[[models]]\nname = "m"\narchitecture = "resnet18"\nweights = "w.pt"\n'
    for entry, message in (
        ('parquet = "x.parquet"\nroot = "x"', "give one of root/csv, parquet or arrow"),
        ("parquet = [1]", "parquet must be a list of file globs"),
        ('root = "x"\nimage_column = "img"', "image_column applies only to parquet or arrow"),
        ('arrow = "x"\nlabel_column = ""', "label_column must be a column name"),
    ):
        path = write_config(f'{head}[[datasets]]\nname = "d"\n{entry}\n')
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    path = write_config(f'{head}[[datasets]]\nname = "d"\nparquet = ["none-*.parquet"]\n')
    with pytest.raises(DatasetError, match="no file matches"):
        open_dataset(load_config(path).dataset("d"))
    (path.parent / "bad.parquet").write_bytes(b"not parquet")
    path = write_config(f'{head}[[datasets]]\nname = "d"\nparquet = ["bad.parquet"]\n')
    with pytest.raises(DatasetError, match=r"cannot read bad\.parquet"):
        open_dataset(load_config(path).dataset("d"))


def test_save_to_disk_folder(tmp_path: Path, pictures: list[np.ndarray]) -> None:
    """A save_to_disk folder: Arrow IPC stream files named by state.json, names from
    dataset_info.json when the schema carries none."""
    folder = tmp_path / "saved"
    folder.mkdir()
    table = hf_table([png(p) for p in pictures], [2, 1, 0, 0, 1, 2, 2]).replace_schema_metadata()
    for i, part in enumerate((table.slice(0, 4), table.slice(4))):
        with (
            pa.OSFile(str(folder / f"data-0000{i}-of-00002.arrow"), "wb") as sink,
            pa.ipc.new_stream(sink, table.schema) as writer,
        ):
            for batch in part.to_batches(max_chunksize=3):
                writer.write_batch(batch)
    files = [{"filename": f"data-0000{i}-of-00002.arrow"} for i in range(2)]
    (folder / "state.json").write_text(json.dumps({"_data_files": files}))
    features = json.loads(hf_metadata(CLASSES)[b"huggingface"])["info"]["features"]
    (folder / "dataset_info.json").write_text(json.dumps({"features": features}))
    dataset = open_dataset(DatasetSpec("saved", folder, arrow=folder))
    assert dataset.classes == CLASSES
    assert dataset.labels.tolist() == [2, 1, 0, 0, 1, 2, 2]
    assert dataset.paths[4] == "data-00001-of-00002.arrow#0"
    for rel, picture in zip(dataset.paths, pictures, strict=True):
        assert np.array_equal(dataset.load(rel).permute(1, 2, 0).numpy(), picture)


def test_bad_cells_are_skipped_with_their_reason(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    good, big = smooth_image(rng), smooth_image(rng, (64, 64))
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(good).save(outside)
    data = tmp_path / "set"
    data.mkdir()
    Image.fromarray(good).save(data / "beside.png")
    images = [png(good), b"not an image", png(big), None, None, None]
    paths = [None, None, None, "beside.png", str(outside), "beside.png"]
    table = hf_table(images, [0, 1, 2, 0, 1, 2], paths=paths)  # type: ignore[arg-type]
    cells = table.column("image").combine_chunks()
    null_cell = pa.StructArray.from_arrays(
        cells.flatten(), ["bytes", "path"], mask=pa.array([False] * 5 + [True])
    )  # the last cell is null as a whole, its fields hidden by the struct's own null
    table = table.set_column(0, "image", null_cell)
    pq.write_table(table, data / "test.parquet")
    spec = DatasetSpec("hf", tmp_path, parquet=(str(data / "*.parquet"),), max_pixels=40 * 40)
    dataset = open_dataset(spec).with_transform(lambda x: x, 3, tensors=True)
    samples = [dataset[i] for i in range(len(dataset))]
    assert samples[0].image is not None and samples[0].error is None
    assert samples[1].image is None and "UnidentifiedImageError" in (samples[1].error or "")
    assert "64×64 = 4,096 pixels: over the dataset's limit of 1,600" in (samples[2].error or "")
    assert samples[3].image is not None and torch.equal(samples[3].image, samples[0].image)
    assert "names a file outside the dataset root" in (samples[4].error or "")
    assert "cell is empty" in (samples[5].error or "")
    assert dataset.display_name("test.parquet#3") == "test.parquet#3 (beside.png)"
    assert dataset.display_name("test.parquet#0") == "test.parquet#0"
    with pytest.raises(ImageRefusedError, match="not an image of this dataset"):
        dataset.load("test.parquet#6")


def test_read_by_row_group_and_fingerprint_from_stats(
    parquet_set: Callable[..., DatasetSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = parquet_set()
    reads: list[int] = []
    original = pq.ParquetFile.read_row_group

    def counted(self: pq.ParquetFile, i: int, *args: object, **kwargs: object) -> pa.Table:
        reads.append(i)
        return original(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    dataset = open_dataset(spec)
    key = dataset.fingerprint()
    assert reads == []  # opening and the fingerprint read no image
    for rel in dataset.paths:
        dataset.load(rel)
    assert reads == [0, 1, 2, 0]  # 3 row groups of 2 + 1 in shard 0, 1 in shard 1, each once
    again = open_dataset(spec)
    assert again.fingerprint() == key
    shard = Path(dataset.reader.files[1].path)
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 1))
    assert open_dataset(spec).fingerprint() != key
    # the listing is a snapshot: a file changed since is refused, not read as something else
    with pytest.raises(ImageRefusedError, match="changed since it was listed"):
        again.load("test-00001-of-00002.parquet#0")
    assert dataset_key(spec) != dataset_key(DatasetSpec("hf", spec.root, parquet=("other",)))


def test_panels_of_two_rows_of_one_file_differ(parquet_set: Callable[..., DatasetSpec]) -> None:
    dataset = open_dataset(parquet_set())
    cache = PanelCache()
    first = cache.panels(dataset, dataset.paths[0], [], 0.5)
    second = cache.panels(dataset, dataset.paths[1], [], 0.5)
    assert first != second


def test_ray_decode_of_table_rows_equals_the_dataset(
    parquet_set: Callable[..., DatasetSpec],
) -> None:
    dataset = open_dataset(parquet_set())
    batch = pa.table(
        {
            "row": pa.array([6, 0], pa.int64()),
            "path": pa.array([dataset.paths[6], dataset.paths[0]]),
            "label": pa.array([2, 0], pa.int64()),
        }
    )
    out = decode_batch(batch, str(dataset.root), 3, (16, 16), reader=dataset.reader)
    assert out["error"].tolist() == ["", ""]
    from core.data.models import ResizeTo

    expected = [ResizeTo((16, 16))(dataset.load(dataset.paths[i])).numpy() for i in (6, 0)]
    assert np.array_equal(out["image"], np.stack(expected))


def test_shortcut_resnet_on_the_parquet_copy_equals_the_folder(tmp_path: Path) -> None:
    """The sample's Parquet copy of shapes-test (export_parquet.py): same rows, same results."""
    config = load_config(REPO / "sample_models" / "config.toml")
    model = load_model(config.model("shapes-resnet (shortcut)"))
    folder = open_dataset(config.dataset("shapes-test"), model.spec.classes)
    table = open_dataset(config.dataset("shapes-test (parquet)"), model.spec.classes)
    assert len(table) == len(folder) == 400
    assert table.labels.tolist() == folder.labels.tolist()
    origins = [table.reader.origin(rel) for rel in table.paths]
    assert origins == folder.paths  # row i is image i of the folder
    a = evaluate(model, folder, tmp_path / "folder")
    b = evaluate(model, table, tmp_path / "table")
    assert a.fingerprint != b.fingerprint
    assert a.skipped == b.skipped == ()
    pa_, pb = a.predictions, b.predictions
    assert pb["path"].tolist() == table.paths
    assert pa_["true"].tolist() == pb["true"].tolist()
    assert pa_["pred"].tolist() == pb["pred"].tolist()
    assert np.array_equal(a.probs(np.arange(400)), b.probs(np.arange(400)))
    assert (pa_["pred"] != pa_["true"]).sum() > 0  # the shortcut model errs: a cell to open


@pytest.mark.timeout(480)
def test_ray_engine_on_the_parquet_copy_equals_in_process(tmp_path: Path) -> None:
    """``python -m core evaluate --engine ray`` (a local Ray in a namespace of its own) on the
    sample's Parquet dataset: the same results as the in-process engine."""
    from core.results import open_results
    from tests.test_ray_engine import assert_same_results, in_namespace

    config = REPO / "sample_models" / "config.toml"
    model, name = "shapes-resnet (shortcut)", "shapes-test (parquet)"
    out = tmp_path / "ray-result"
    script = (
        f"python -m core evaluate --config {config} --model '{model}' --dataset '{name}' "
        f"--engine ray --no-cache --out {out}/\n"
    )
    done = in_namespace(script)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    loaded = load_model(load_config(config).model(model))
    dataset = open_dataset(load_config(config).dataset(name), loaded.spec.classes)
    local = evaluate(loaded, dataset, out=tmp_path / "local", num_workers=0)
    ray = open_results(out)
    assert ray.predictions["path"].tolist() == dataset.paths
    assert_same_results(ray, local)
