"""Test sets: ImageFolder and CSV listings, image mode conversion, unreadable files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from core.config import DatasetSpec
from core.data.datasets import ImageDataset, open_dataset
from core.data.images import _decode_png, _to_array, load_array, load_image, load_tensor
from core.errors import DatasetError, ImageRefusedError, UserFacingError

# --- listing ----------------------------------------------------------------------------


def predict(model, dataset, **kwargs):  # type: ignore[no-untyped-def]
    """The in-process engine into a scratch result folder (no class check, no maps)."""
    import tempfile

    from core.results import ResultWriter
    from core.results.local_engine import predict as run

    folder = Path(tempfile.mkdtemp(prefix="test-results-"))
    with ResultWriter(folder, dataset.samples, dataset.classes, "test") as writer:
        run(model, dataset, writer, **kwargs)
        return writer.finish()


def test_image_folder_classes_are_sorted_folder_names(make_image_folder) -> None:
    root = make_image_folder({"zebra": 2, "Ant": 1, "cat": 3, "c10": 1, "c2": 1})
    (root / "notes.txt").write_text("not a class")
    (root / "cat" / "readme.txt").write_text("not an image")
    dataset = open_dataset(DatasetSpec("d", root))
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert dataset.classes == folders
    assert len(dataset) == 8
    for rel, label in dataset.samples:
        assert rel.split("/")[0] == dataset.classes[label]
        assert (root / rel).is_file()
        assert rel.endswith(".png")
        assert not Path(rel).is_absolute()


def test_explicit_class_list_sets_the_order(make_image_folder) -> None:
    root = make_image_folder({"a": 1, "b": 2, "c": 3})
    order = ["c", "a", "b", "unseen"]
    for dataset in (
        open_dataset(DatasetSpec("d", root, classes=tuple(order))),
        open_dataset(DatasetSpec("d", root), classes=order),  # e.g. the model's class list
    ):
        assert dataset.classes == order
        counts = np.bincount([label for _, label in dataset.samples], minlength=len(order))
        assert counts.tolist() == [3, 1, 2, 0]
        for rel, label in dataset.samples:
            assert rel.split("/")[0] == order[label]


def test_folder_listing_is_torchvisions(make_image_folder) -> None:
    """The listing is ImageFolder's (torchvision's ``make_dataset``, the reference): the same
    files in the same order, through nested folders, linked folders, broken links and mixed-case
    extensions, with a class order that is not the folders' alphabetical one."""
    from torchvision.datasets.folder import make_dataset

    from core.data.datasets import EXTENSIONS

    root = make_image_folder({"b": 3, "a": 2, "c": 1})
    (root / "a" / "deeper" / "x").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(root / "a" / "deeper" / "x" / "n.png")
    Image.new("RGB", (4, 4)).save(root / "a" / "deeper" / "Upper.JPG")
    for sibling in ("deeper-2", "alpha", "zeta"):  # "deeper-2" sorts before "deeper/x"
        (root / "a" / sibling).mkdir()
        Image.new("RGB", (4, 4)).save(root / "a" / sibling / "m.png")
    (root / "a" / "deeper" / "notes.txt").write_text("not an image")
    (root / "a-extra").mkdir()  # sorts between "a" and "a/..." paths as a string
    (root / "b" / "linked").symlink_to(root / "c", target_is_directory=True)
    (root / "b" / "gone.png").symlink_to(root / "nowhere.png")  # broken: listed, skipped on read
    (root / "b" / "loop.png").symlink_to(root / "b" / "loop.png")  # listed; its folder too
    order = ["c", "b", "a-extra", "a"]
    dataset = open_dataset(DatasetSpec("d", root, classes=tuple(order)))
    found = make_dataset(str(root), {n: i for i, n in enumerate(order)}, EXTENSIONS, None, True)
    expected = [(os.path.relpath(path, root).replace(os.sep, "/"), label) for path, label in found]
    assert dataset.samples == expected
    assert ("b/gone.png", 1) in dataset.samples and ("a/deeper/Upper.JPG", 3) in dataset.samples
    assert ("b/loop.png", 1) in dataset.samples and ("b/000.png", 1) in dataset.samples


def test_listing_on_several_processes_is_the_same(make_image_folder) -> None:
    """Worker processes sharing the class folders list the same files in the same order,
    each with its size and mtime as ``os.stat`` gives them ([-1, -1] for no regular file)."""
    from core.data.datasets import EXTENSIONS
    from core.data.listing import walk_folders

    root = make_image_folder({f"c{i}": i % 3 for i in range(7)})
    (root / "c1" / "sub").mkdir()
    (root / "c1" / "sub" / "big.png").write_bytes(b"x" * 5_000)
    (root / "c2" / "gone.png").symlink_to(root / "nowhere.png")
    os.mkfifo(root / "c4" / "pipe.png")
    folders = sorted(p.name for p in root.iterdir())
    alone = walk_folders(str(root), folders, EXTENSIONS, processes=1)
    shared = walk_folders(str(root), folders, EXTENSIONS, processes=3, parallel_from=0)
    assert [rels for rels, _ in shared] == [rels for rels, _ in alone]
    for (rels, stats), (_, alone_stats) in zip(shared, alone, strict=True):
        assert stats.dtype == np.int64 and stats.shape == (len(rels), 2)
        np.testing.assert_array_equal(stats, alone_stats)
        for rel, (size, mtime) in zip(rels, stats.tolist(), strict=True):
            info = (root / rel).stat() if (root / rel).exists() else None
            regular = info is not None and stat.S_ISREG(info.st_mode)
            assert [size, mtime] == ([info.st_size, info.st_mtime_ns] if regular else [-1, -1])
    assert sum(len(rels) for rels, _ in shared) == 6 + 3  # the 7 folders' images, 3 others
    assert shared[0][0] == [] and shared[0][1].shape == (0, 2)  # "c0" has no image


def test_fingerprint_follows_every_file(make_image_folder) -> None:
    """Size and modification time of every file (through links), the labels and the paths."""
    root = make_image_folder({"a": 2, "b": 1})
    dataset = open_dataset(DatasetSpec("d", root))
    first = dataset.fingerprint()
    assert open_dataset(DatasetSpec("d", root)).fingerprint() == first  # nothing changed
    image = root / dataset.samples[0][0]
    info = image.stat()
    os.utime(image, ns=(info.st_atime_ns, info.st_mtime_ns + 1))
    touched = open_dataset(DatasetSpec("d", root)).fingerprint()
    assert dataset.fingerprint() == first  # a snapshot: the files as they were listed
    image.unlink()
    gone = open_dataset(DatasetSpec("d", root)).fingerprint()
    relabelled = open_dataset(DatasetSpec("d", root, classes=("b", "a"))).fingerprint()
    assert len({first, touched, gone, relabelled}) == 4
    folder = ImageDataset("d", root, [("a", 0)], ["a"])  # a manifest may list a folder
    assert folder.fingerprint() != ImageDataset("d", root, [("z", 0)], ["a"]).fingerprint()


def test_a_manifest_fingerprint_follows_a_listed_file_that_is_gone(make_image_folder) -> None:
    """A manifest lists files that may be missing: a file deleted after the first
    fingerprint changes the next opening's, as an edited one does."""
    root = make_image_folder({"a": 2})
    (root / "m.csv").write_text("path,label\na/000.png,a\na/001.png,a\n")
    spec = DatasetSpec("d", root, csv=root / "m.csv")
    first = open_dataset(spec).fingerprint()
    assert open_dataset(spec).fingerprint() == first
    (root / "a" / "001.png").unlink()
    gone = open_dataset(spec)
    assert gone.stats[1].tolist() == [-1, -1] and gone.fingerprint() != first


def test_file_stats_are_os_stats_of_regular_files(tmp_path: Path) -> None:
    """Size and mtime as ``os.stat`` gives them (through links); [-1, -1] for a folder, a FIFO,
    a broken link, a link loop and a missing path."""
    from core.data.listing import file_stats

    (tmp_path / "big.png").write_bytes(b"x" * 12_345)
    (tmp_path / "empty.png").touch()
    (tmp_path / "copy.png").symlink_to(tmp_path / "big.png")
    (tmp_path / "folder.png").mkdir()
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    names = ["big.png", "folder.png", "empty.png", "pipe.png", "copy.png", "gone.png"]
    names += ["loop.png", "missing.png"]
    paths = [str(tmp_path / name) for name in names] * 3  # more than one chunk per thread
    expected = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            info = None
        regular = info is not None and stat.S_ISREG(info.st_mode)
        expected.append([info.st_size, info.st_mtime_ns] if info and regular else [-1, -1])
    found = file_stats(paths)
    assert found.dtype == np.int64 and found.tolist() == expected
    assert found[:8, 0].tolist() == [12_345, -1, 0, -1, 12_345, -1, -1, -1]
    assert file_stats([]).shape == (0, 2)


def test_class_list_conflicts(make_image_folder) -> None:
    root = make_image_folder({"a": 1, "b": 1, "c": 1})
    with pytest.raises(DatasetError, match="not in the class list") as info:
        open_dataset(DatasetSpec("d", root, classes=("a", "b")))
    assert "'c'" in str(info.value)
    with pytest.raises(DatasetError, match="model"):
        open_dataset(DatasetSpec("d", root, classes=("a", "b", "c")), classes=["c", "b", "a"])


def test_manifest(tmp_path: Path, make_image_folder) -> None:
    make_image_folder({"x": 2, "y": 2}, root=tmp_path / "set")
    (tmp_path / "set" / "manifest.csv").write_text(
        "path,label,comment\nx/000.png,dog,a\ny/000.png,cat,b\n./x/001.png,cat,c\ny/001.png,dog,d\n"
    )
    spec = DatasetSpec("d", tmp_path / "set", csv=tmp_path / "set" / "manifest.csv")
    dataset = open_dataset(spec)
    assert dataset.classes == ["cat", "dog"]
    assert dataset.samples == [
        ("x/000.png", 1),
        ("y/000.png", 0),
        ("x/001.png", 0),
        ("y/001.png", 1),
    ]
    explicit = open_dataset(spec, classes=["dog", "cat", "bird"])
    assert [label for _, label in explicit.samples] == [0, 1, 1, 0]
    assert explicit.classes == ["dog", "cat", "bird"]


def test_manifest_label_outside_the_class_list_is_fatal(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    Image.new("L", (8, 8)).save(root / "a" / "0.png")
    manifest = root / "manifest.csv"
    manifest.write_text("path,label\na/0.png,cat\na/0.png,horse\n")
    with pytest.raises(DatasetError) as info:
        open_dataset(DatasetSpec("d", root, csv=manifest, classes=("cat", "dog")))
    for word in ("line 3", "'horse'", "class list"):
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ("../outside.png", ["outside the dataset root", "outside.png"]),
        ("a/../../outside.png", ["outside the dataset root", "outside.png"]),
        ("{outside}", ["outside the dataset root", "outside.png"]),
        ("a/missing.png", ["file not found"]),
        ("a", ["not a regular file"]),
    ],
)
def test_a_bad_manifest_path_is_one_skipped_row(tmp_path: Path, row: str, words: list[str]) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    Image.new("L", (8, 8), 77).save(root / "a" / "0.png")
    outside = tmp_path / "outside.png"
    Image.new("L", (8, 8)).save(outside)
    manifest = root / "manifest.csv"
    manifest.write_text(f"path,label\na/0.png,cat\n{row.format(outside=outside)},dog\n")
    dataset = open_dataset(DatasetSpec("d", root, csv=manifest, classes=("cat", "dog")))
    assert len(dataset) == 2  # listed: the set stays usable
    good, bad = dataset[0], dataset[1]
    assert good.image is not None and int(good.image.max()) == 77
    assert bad.image is None and bad.error is not None
    for word in words:
        assert word in bad.error
    with pytest.raises(ImageRefusedError) as info:  # display refuses it with the same words
        dataset.image(dataset.samples[1][0])
    assert str(info.value) == bad.error


def test_manifest_without_path_and_label_columns(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,class\na.png,cat\n")
    with pytest.raises(DatasetError, match="path,label"):
        open_dataset(DatasetSpec("d", tmp_path, csv=manifest))


def _tree_with_escaping_links(tmp_path: Path, make_image_folder) -> tuple[Path, Path]:
    root = make_image_folder({"a": 2, "b": 2}, root=tmp_path / "root")
    cache = tmp_path / "dvc-cache"
    cache.mkdir()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(cache / "0f3a.png")
    (root / "a" / "cached.png").symlink_to(cache / "0f3a.png")
    (root / "b" / "etc.png").symlink_to("/etc/passwd")
    (root / "b" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    return root, cache


def test_links_outside_the_root_are_skipped_not_fatal(
    tmp_path: Path, make_image_folder, digits_model
) -> None:
    root, cache = _tree_with_escaping_links(tmp_path, make_image_folder)
    dataset = open_dataset(DatasetSpec("d", root))  # default: the root only
    assert len(dataset) == 7  # every file is listed
    errors = {rel: dataset[i].error for i, (rel, _) in enumerate(dataset.samples)}
    assert errors["a/cached.png"] == (
        f"links outside the dataset root and its link_roots: -> {cache / '0f3a.png'}"
    )
    assert (
        errors["b/etc.png"] == "links outside the dataset root and its link_roots: -> /etc/passwd"
    )
    assert errors["b/dangling.png"] == (  # decided before the target is looked at
        f"links outside the dataset root and its link_roots: -> {tmp_path / 'nowhere.png'}"
    )
    assert [rel for rel, error in errors.items() if error is None] == [
        "a/000.png", "a/001.png", "b/000.png", "b/001.png"
    ]  # fmt: skip
    for rel in ("a/cached.png", "b/etc.png", "b/dangling.png"):  # display: the same decision
        with pytest.raises(ImageRefusedError) as info:
            dataset.image(rel)
        assert str(info.value) == errors[rel]
    result = predict(digits_model, dataset, num_workers=0)  # the rest evaluates
    assert {s.path: s.reason for s in result.skipped} == {
        rel: errors[rel] for rel in ("a/cached.png", "b/dangling.png", "b/etc.png")
    }
    assert len(result.predictions) == 4


def test_link_roots_admit_links_into_a_cache(tmp_path: Path, make_image_folder) -> None:
    root, cache = _tree_with_escaping_links(tmp_path, make_image_folder)
    dataset = open_dataset(DatasetSpec("d", root, link_roots=(cache,)))
    image = dataset.load("a/cached.png")
    assert image.shape == (3, 8, 8) and image[:, 0, 0].tolist() == [10, 200, 30]
    assert np.asarray(dataset.image("a/cached.png")).shape == (8, 8, 3)
    assert "/etc/passwd" in (dataset[dataset.samples.index(("b/etc.png", 1))].error or "")
    (cache / "gone.png").symlink_to(cache / "missing.png")
    (root / "a" / "chain.png").symlink_to(cache / "gone.png")
    dataset = open_dataset(DatasetSpec("d", root, link_roots=(cache,)))
    with pytest.raises(ImageRefusedError, match="broken link"):
        dataset.load("a/chain.png")
    # a folder next to the cache whose name starts like it is not inside it
    sibling = tmp_path / "dvc-cache2"
    sibling.mkdir()
    Image.new("RGB", (8, 8)).save(sibling / "x.png")
    (root / "a" / "sibling.png").symlink_to(sibling / "x.png")
    dataset = open_dataset(DatasetSpec("d", root, link_roots=(cache,)))
    with pytest.raises(ImageRefusedError, match="links outside"):
        dataset.load("a/sibling.png")


def test_symlink_inside_the_root_is_fine(make_image_folder) -> None:
    root = make_image_folder({"a": 1, "b": 1})
    (root / "b" / "copy.png").symlink_to(root / "a" / "000.png")
    dataset = open_dataset(DatasetSpec("d", root))
    assert len(dataset) == 3


def test_path_of_an_image_refuses_what_is_not_listed(make_image_folder) -> None:
    root = make_image_folder({"a": 1, "b": 1})
    dataset = open_dataset(DatasetSpec("d", root))
    assert dataset.path("a/000.png") == (root / "a" / "000.png").resolve()
    for rel in ("../x.png", "a/999.png", "/etc/passwd"):
        with pytest.raises(ImageRefusedError, match="not an image of dataset"):
            dataset.path(rel)


@pytest.mark.parametrize("kind", ["no images", "no class folders", "missing root", "empty csv"])
def test_empty_or_missing_dataset(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    csv = None
    if kind == "no images":
        (root / "a").mkdir()
        (root / "a" / "notes.txt").write_text("x")
        words = ["no images", str(root)]
    elif kind == "no class folders":
        Image.new("L", (8, 8)).save(root / "flat.png")
        words = ["class sub-folders"]
    elif kind == "missing root":
        root = tmp_path / "absent"
        words = ["not found", "absent"]
    else:
        csv = root / "m.csv"
        csv.write_text("path,label\n")
        words = ["no images"]
    with pytest.raises(DatasetError) as info:
        open_dataset(DatasetSpec("d", root, csv=csv))
    for word in words:
        assert word in str(info.value)


def test_dataset_errors_are_user_facing() -> None:
    assert issubclass(DatasetError, UserFacingError)


# --- image modes ------------------------------------------------------------------------


def _gray_of(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, as PIL's L conversion defines it."""
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _stored_mode(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


def _check(path: Path, expected_rgb: np.ndarray) -> None:
    """``load_image`` gives ``expected_rgb`` (±1) for channels=3 and its luma for channels=1."""
    rgb = load_image(path, 3)
    assert rgb.mode == "RGB"
    np.testing.assert_allclose(np.asarray(rgb, dtype=float), expected_rgb, atol=1.01)
    gray = load_image(path, 1)
    assert gray.mode == "L"
    np.testing.assert_allclose(np.asarray(gray, dtype=float), _gray_of(expected_rgb), atol=1.01)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_rgb_and_grayscale(tmp_path: Path, rng) -> None:
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    _check(tmp_path / "rgb.png", rgb)
    gray = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    assert _stored_mode(tmp_path / "gray.png") == "L"
    _check(tmp_path / "gray.png", np.repeat(gray[..., None], 3, axis=2))


def test_palette_without_transparency(tmp_path: Path, rng) -> None:
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    image = Image.new("P", (11, 9))
    image.putdata(index.ravel().tolist())
    image.putpalette(palette.ravel().tolist())
    image.save(tmp_path / "p.png")
    assert _stored_mode(tmp_path / "p.png") == "P"
    _check(tmp_path / "p.png", palette[index])


def test_palette_with_transparency_is_composited_over_white(tmp_path: Path, rng) -> None:
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    palette[3] = (10, 20, 30)  # the transparent entry's own colour must not show
    index = rng.integers(0, 16, (9, 11), dtype=np.uint8)
    index[0, :] = 3
    image = Image.new("P", (11, 9))
    image.putdata(index.ravel().tolist())
    image.putpalette(palette.ravel().tolist())
    image.save(tmp_path / "pt.png", transparency=3)
    with Image.open(tmp_path / "pt.png") as check:
        assert check.mode == "P" and "transparency" in check.info
    expected = palette[index].astype(float)
    expected[index == 3] = 255.0
    _check(tmp_path / "pt.png", expected)


def test_rgba_and_la_are_composited_over_white(tmp_path: Path, rng) -> None:
    rgb = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (8, 10), dtype=np.uint8)
    alpha[0, :], alpha[1, :] = 0, 255
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(tmp_path / "rgba.png")
    a = alpha[..., None].astype(float) / 255.0
    expected = rgb * a + 255.0 * (1 - a)
    assert (expected[0] == 255).all()  # fully transparent: white, whatever the colour
    _check(tmp_path / "rgba.png", expected)
    gray = rng.integers(0, 256, (8, 10), dtype=np.uint8)
    Image.fromarray(np.dstack([gray, alpha]), mode="LA").save(tmp_path / "la.png")
    expected_gray = gray * a[..., 0] + 255.0 * (1 - a[..., 0])
    _check(tmp_path / "la.png", np.repeat(expected_gray[..., None], 3, axis=2))


def test_16_bit_is_scaled_not_clipped(tmp_path: Path, rng) -> None:
    values = rng.integers(0, 65536, (10, 12), dtype=np.uint16)
    values[0, :4] = [0, 32768, 65535, 257 * 77]
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode.startswith("I")  # stored as 16-bit
    gray = load_image(tmp_path / "deep.png", 1)
    assert np.asarray(gray)[0, :4].tolist() == [0, 128, 255, 77]
    expected = values.astype(float) * 255.0 / 65535.0
    _check(tmp_path / "deep.png", np.repeat(expected[..., None], 3, axis=2))


def test_float_image_spanning_0_to_1(tmp_path: Path, rng) -> None:
    values = rng.random((10, 12)).astype(np.float32)
    values[0, 0], values[0, 1] = 0.0, 1.0
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    with Image.open(tmp_path / "float.tif") as check:
        assert check.mode == "F"
    expected = values.astype(float) * 255.0
    _check(tmp_path / "float.tif", np.repeat(expected[..., None], 3, axis=2))


def test_dataset_yields_what_the_model_takes(make_image_folder, digits_model) -> None:
    root = make_image_folder({"a": 1}, mode="RGBA", size=(20, 24))
    dataset = open_dataset(DatasetSpec("d", root)).with_transform(digits_model.transform, 1)
    sample = dataset[0]
    assert sample.error is None
    assert sample.image.shape == (1, 32, 32)
    raw = open_dataset(DatasetSpec("d", root))[0]  # no transform: uint8 C×H×W as stored
    assert raw.image.shape == (3, 20, 24)


# --- the fast PNG decoder ----------------------------------------------------------------


def _png_variants(folder: Path, rng: np.random.Generator) -> dict[str, Path]:
    """One PNG per storage variant that OpenCV reads (gray 1/4/8-bit, gray with a transparent
    value, RGB, interlaced RGB, palette) and per variant it must leave to PIL."""
    gray = rng.integers(0, 256, (13, 11), dtype=np.uint8)
    rgb = rng.integers(0, 256, (13, 11, 3), dtype=np.uint8)
    palette = Image.new("P", (11, 13))
    palette.putdata(rng.integers(0, 16, 13 * 11).tolist())
    palette.putpalette(rng.integers(0, 256, 48).tolist())
    saves = {
        "gray": (Image.fromarray(gray), {}),
        "gray_1bit": (Image.fromarray(gray > 128), {}),
        "gray_4bit": (Image.fromarray(gray // 17 * 17), {"bits": 4}),
        "gray_trns": (Image.fromarray(gray), {"transparency": 7}),
        "rgb": (Image.fromarray(rgb), {}),
        "rgb_interlaced": (Image.fromarray(rgb), {"interlace": 1}),
        "palette": (palette, {}),
        "palette_trns": (palette, {"transparency": 2}),
        "rgba": (Image.fromarray(np.dstack([rgb, gray]), mode="RGBA"), {}),
        "gray_16bit": (Image.fromarray(gray.astype(np.uint16) * 257), {}),
    }
    paths = {}
    for name, (image, options) in saves.items():
        paths[name] = folder / f"{name}.png"
        image.save(paths[name], **options)
    return paths


FAST = {  # variant -> channel counts OpenCV decodes; the rest must fall back to PIL
    "gray": (1, 3),
    "gray_1bit": (1, 3),
    "gray_4bit": (1, 3),
    "gray_trns": (1, 3),
    "rgb": (3,),
    "rgb_interlaced": (3,),
    "palette": (3,),
}


def test_fast_png_decoder_gives_exactly_the_pixels_of_pil(tmp_path: Path, rng) -> None:
    """Where OpenCV decodes, its pixels are PIL's bit for bit; everything else (alpha, 16-bit,
    a transparent palette entry, RGB to gray) is left to PIL's path, which composites,
    scales and converts it."""
    for name, path in _png_variants(tmp_path, rng).items():
        for channels in (1, 3):
            reference = _to_array(load_image(path, channels))
            fast = _decode_png(str(path), channels)
            takes_fast_path = channels in FAST.get(name, ())
            assert (fast is not None) == takes_fast_path, (name, channels)
            if fast is not None:
                assert fast.dtype == np.uint8 and fast.shape == reference.shape
                assert np.array_equal(fast, reference), (name, channels)
            assert np.array_equal(load_array(path, channels), reference), (name, channels)
            tensor = load_tensor(path, channels)
            assert tensor.dtype == torch.uint8 and tensor.shape == (channels, *reference.shape[:2])
            assert torch.equal(tensor, torch.from_numpy(reference).permute(2, 0, 1))


def test_truncated_or_damaged_png_gets_pil_s_message(tmp_path: Path, rng) -> None:
    gray = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside the image data: the file still ends with IEND
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    assert _decode_png(str(tmp_path / "cut.png"), 1) is None
    assert _decode_png(str(tmp_path / "flipped.png"), 1) is None
    with pytest.raises(OSError, match="truncated"):
        load_tensor(tmp_path / "cut.png", 1)
    with pytest.raises((OSError, SyntaxError, ValueError)):
        load_tensor(tmp_path / "flipped.png", 1)


# --- unreadable files -------------------------------------------------------------------


def test_corrupt_files_are_skipped_with_reasons(
    tmp_path: Path, digits_subset, digits_model
) -> None:
    root = digits_subset(per_class=2)
    (root / "3" / "garbage.png").write_bytes(os.urandom(800))
    jpeg = np.asarray(load_image(next((root / "5").glob("*.png")), 3))
    Image.fromarray(np.tile(jpeg, (4, 4, 1))).save(root / "5" / "truncated.jpg", quality=95)
    data = (root / "5" / "truncated.jpg").read_bytes()
    (root / "5" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "7" / "empty.png").write_bytes(b"")
    dataset = open_dataset(DatasetSpec("d", root))
    assert len(dataset) == 23  # listed by extension; decoding happens later
    bad = {"3/garbage.png", "5/truncated.jpg", "7/empty.png"}
    for index, (rel, _) in enumerate(dataset.samples):
        sample = dataset[index]
        assert (sample.image is None) == (rel in bad)
        assert (sample.error is not None) == (rel in bad)

    result = predict(digits_model, dataset, batch_size=8, num_workers=0)
    assert {s.path for s in result.skipped} == bad
    reasons = {s.path: s.reason for s in result.skipped}
    assert "truncated" in reasons["5/truncated.jpg"]
    assert all(reason for reason in reasons.values())
    assert len(result.predictions) == 20
    assert set(result.predictions["path"]) == {rel for rel, _ in dataset.samples} - bad


def test_every_file_unreadable_is_still_not_fatal(tmp_path: Path, digits_model) -> None:
    for digit in range(10):
        (tmp_path / "d" / str(digit)).mkdir(parents=True)
    (tmp_path / "d" / "0" / "a.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "d" / "4" / "b.jpg").write_bytes(os.urandom(64))
    result = predict(digits_model, open_dataset(DatasetSpec("d", tmp_path / "d")), num_workers=0)
    assert result.predictions.empty
    assert {s.path for s in result.skipped} == {"0/a.png", "4/b.jpg"}


@pytest.mark.parametrize("size", [(32, 32), (20, 27)])
def test_evaluation_pixels_equal_the_cam_pixels(make_image_folder, digits_model, size) -> None:
    """Evaluation feeds uint8 tensors to a lean resize; CAMs feed PIL images to ``transform``.
    Both must give the model the same input, resized or not."""
    root = make_image_folder({"a": 3, "b": 2}, size=size, mode="RGB")
    dataset = open_dataset(DatasetSpec("d", root))
    lean = dataset.with_transform(digits_model.resize, 1, tensors=True)
    full = dataset.with_transform(digits_model.transform, 1)
    for i in range(len(dataset)):
        image = lean[i].image
        assert image is not None and image.dtype == torch.uint8
        assert image.shape == (1, 32, 32)
        assert torch.equal(digits_model.normalize(image), full[i].image)


# --- pixel limit ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["big.png", "big.jpg", "big_rgba.png"])
def test_an_image_over_max_pixels_is_refused_undecoded_in_both_paths(
    tmp_path: Path, make_image_folder, monkeypatch, name: str
) -> None:
    root = make_image_folder({"a": 2, "b": 1}, root=tmp_path / "root", size=(20, 30))  # 600 px
    mode = "RGBA" if "rgba" in name else "RGB"
    Image.new(mode, (40, 30), "red").save(root / "b" / name)  # 1,200 px
    dataset = open_dataset(DatasetSpec("d", root, max_pixels=1_000))

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image over the limit was decoded")

    monkeypatch.setattr("core.data.images.cv2.imdecode", never)  # the OpenCV path
    monkeypatch.setattr(ImageFile.ImageFile, "load", never)  # the PIL path
    error = dataset[dataset.samples.index((f"b/{name}", 1))].error
    assert error == "image of 40×30 = 1,200 pixels: over the dataset's limit of 1,000 (max_pixels)"
    with pytest.raises(ImageRefusedError) as info:
        dataset.image(f"b/{name}")
    assert str(info.value) == error
    monkeypatch.undo()
    assert all(dataset[i].image is not None for i in range(3))  # the others read as usual
    limit_at_size = open_dataset(DatasetSpec("d", root, max_pixels=1_200))
    assert limit_at_size.load(f"b/{name}").shape == (3, 30, 40)  # the limit is inclusive


def test_the_pixel_limit_changes_the_fingerprint(make_image_folder) -> None:
    root = make_image_folder({"a": 1})
    prints = {
        open_dataset(DatasetSpec("d", root, max_pixels=m, link_roots=links)).fingerprint()
        for m, links in ((1_000, ()), (2_000, ()), (1_000, (root.parent,)))
    }
    assert len(prints) == 3  # a cached evaluation never outlives a change of the read rules
