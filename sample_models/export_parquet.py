"""Write the shapes test split as Parquet, as Hugging Face ``datasets`` writes a split.

The images' PNG bytes, unchanged, go into an ``image`` struct ``{bytes, path}`` (``path`` is the
file's path under ``shapes/test``), the class index into ``label``, and the class names into a
``ClassLabel`` in the schema's ``huggingface`` metadata, in row groups of 100 rows (what
``datasets`` uses for image columns). Rows are in the folder's order (torchvision's
ImageFolder), so row ``i`` of the Parquet copy is image ``i`` of the folder. The folder's
metadata (``sites.csv``, when there is one) comes along as columns ``site`` and ``scanner``
(text) and ``captured`` (a timestamp, null where blank): a split's own columns are its
metadata::

    python sample_models/export_parquet.py            # shapes/parquet/test-00000-of-00001.parquet
    python sample_models/export_parquet.py --arrow    # also shapes/arrow/ (a save_to_disk folder)

The output is the same bytes from run to run (for one pyarrow version).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from core.config import DatasetSpec  # noqa: E402
from core.data.datasets import open_dataset  # noqa: E402

ROW_GROUP = 100  # datasets' PARQUET_ROW_GROUP_SIZE_FOR_IMAGE_DATASETS


def hf_table(root: Path) -> pa.Table:
    """The ImageFolder tree under ``root`` as a table in ``datasets``' layout."""
    folder = open_dataset(DatasetSpec("export", root))
    data = [(root / rel).read_bytes() for rel in folder.paths]
    image = pa.StructArray.from_arrays(
        [pa.array(data, pa.binary()), pa.array(folder.paths, pa.string())], ["bytes", "path"]
    )
    features = {
        "image": {"_type": "Image"},
        "label": {"names": folder.classes, "_type": "ClassLabel"},
    }
    columns = {"image": image, "label": pa.array(folder.labels, pa.int64())}
    sites = root / "sites.csv"
    if sites.exists():
        columns.update(_sites(sites, folder.paths))
        features.update(
            site={"dtype": "string", "_type": "Value"},
            scanner={"dtype": "string", "_type": "Value"},
            captured={"dtype": "timestamp[ms]", "_type": "Value"},
        )
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    return pa.table(columns).replace_schema_metadata(metadata)


def _sites(path: Path, paths: list[str]) -> dict[str, pa.Array]:
    """site, scanner and captured of each image, in the folder's order."""
    convert = pa_csv.ConvertOptions(
        column_types={"site": pa.string(), "scanner": pa.string(), "captured": pa.timestamp("ms")}
    )
    table = pa_csv.read_csv(path, convert_options=convert)
    order = pc.index_in(pa.array(paths), value_set=table.column("path"))
    return {name: table.column(name).take(order) for name in ("site", "scanner", "captured")}


def write_parquet(table: pa.Table, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "test-00000-of-00001.parquet"
    partial = out / f".{path.name}.tmp"  # readers see the old file or the new one
    pq.write_table(table, partial, row_group_size=ROW_GROUP)
    os.replace(partial, path)
    return path


def write_arrow(table: pa.Table, out: Path) -> Path:
    """A ``save_to_disk`` folder: an Arrow IPC stream file, dataset_info.json and state.json."""
    out.mkdir(parents=True, exist_ok=True)
    name = "data-00000-of-00001.arrow"
    with pa.OSFile(str(out / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=ROW_GROUP):
            writer.write_batch(batch)
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    (out / "dataset_info.json").write_text(json.dumps({"features": features}, indent=2))
    state = {"_data_files": [{"filename": name}], "_split": "test"}
    (out / "state.json").write_text(json.dumps(state, indent=2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=HERE / "shapes" / "test")
    parser.add_argument("--out", type=Path, default=HERE / "shapes" / "parquet")
    parser.add_argument("--arrow", type=Path, nargs="?", const=HERE / "shapes" / "arrow")
    args = parser.parse_args()
    table = hf_table(args.src)
    print(f"wrote {write_parquet(table, args.out)} ({table.num_rows} rows)")
    if args.arrow is not None:
        print(f"wrote {write_arrow(table, args.arrow)}")


if __name__ == "__main__":
    main()
