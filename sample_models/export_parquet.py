"""Write the shapes test split as Parquet, as Hugging Face ``datasets`` writes a split.

The images' PNG bytes, unchanged, go into an ``image`` struct ``{bytes, path}`` (``path`` is the
file's path under ``shapes/test``), the class index into ``label``, and the class names into a
``ClassLabel`` in the schema's ``huggingface`` metadata, in row groups of 100 rows (what
``datasets`` uses for image columns). Rows are in the folder's order (torchvision's
ImageFolder), so row ``i`` of the Parquet copy is image ``i`` of the folder::

    python sample_models/export_parquet.py            # shapes/parquet/test-00000-of-00001.parquet
    python sample_models/export_parquet.py --arrow    # also shapes/arrow/ (a save_to_disk folder)

The output is the same bytes from run to run (for one pyarrow version).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow as pa
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
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    label = pa.array(folder.labels, pa.int64())
    return pa.table({"image": image, "label": label}).replace_schema_metadata(metadata)


def write_parquet(table: pa.Table, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "test-00000-of-00001.parquet"
    pq.write_table(table, path, row_group_size=ROW_GROUP)
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
