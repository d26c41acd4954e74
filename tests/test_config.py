"""Project config: parsing, defaults, paths relative to the file, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import DEFAULT_MAX_PIXELS, MAX_PIXELS_CAP, load_config
from core.errors import ConfigError, UserFacingError

MINIMAL = """
    [[models]]
    name = "net"
    architecture = "resnet18"
    weights = "weights/net.pt"

    [[datasets]]
    name = "test"
    root = "data/test"
"""


def test_sample_config_paths_are_relative_to_the_file(sample_config) -> None:
    folder = sample_config.path.parent
    model = sample_config.model("digits-cnn")
    assert model.factory == "digits_model:build"
    assert model.weights == folder / "digits" / "weights.safetensors"
    assert model.weights.is_file()
    assert (model.channels, model.input_size, model.mean, model.std) == (
        1,
        (32, 32),
        (0.5,),
        (0.5,),
    )
    assert model.base_dir == folder
    dataset = sample_config.dataset("digits-test")
    assert dataset.root == (folder / "digits" / "test").resolve()
    assert dataset.root.is_dir()
    assert sample_config.cache_dir == folder / ".cache"


def test_defaults_and_relative_paths(write_config, tmp_path: Path) -> None:
    config = load_config(write_config(MINIMAL))
    model = config.model()
    assert model.name == "net"
    assert model.weights == tmp_path / "weights" / "net.pt"
    assert model.architecture == "resnet18"
    assert (model.factory, model.module) == (None, None)
    assert model.input_size == (224, 224)
    assert model.channels == 3
    assert model.mean == pytest.approx((0.485, 0.456, 0.406))
    assert model.std == pytest.approx((0.229, 0.224, 0.225))
    assert model.trusted is False
    assert model.device == "auto"
    assert model.batch_size >= 1
    assert config.dataset().root == (tmp_path / "data" / "test").resolve()
    assert config.cache_dir == tmp_path / ".cache"
    assert config.notes_db.parent == config.cache_dir


def test_loading_from_another_working_directory(write_config, tmp_path, monkeypatch) -> None:
    path = write_config(MINIMAL)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / path.name)
    assert config.model().weights == tmp_path / "weights" / "net.pt"
    assert config.cache_dir == tmp_path / ".cache"


def test_grayscale_defaults_and_explicit_values(write_config, tmp_path: Path) -> None:
    config = load_config(
        write_config(
            """
            cache_dir = "cache-here"
            [[models]]
            name = "gray"
            factory = "pkg.nets:build"
            factory_kwargs = { width = 4 }
            weights = "w.safetensors"
            channels = 1
            input_size = 28
            classes = ["cat", "dog"]
            batch_size = 5
            device = "cpu"

            [[models]]
            name = "whole"
            module = "whole.pt"
            trusted = true
            mean = [0.1, 0.2, 0.3]
            std = [0.4, 0.5, 0.6]

            [[datasets]]
            name = "csv-set"
            csv = "sets/manifest.csv"
            classes = ["cat", "dog"]
            """
        )
    )
    gray = config.model("gray")
    assert (gray.mean, gray.std) == ((0.5,), (0.5,))
    assert gray.input_size == (28, 28)
    assert gray.factory_kwargs == {"width": 4}
    assert gray.classes == ("cat", "dog")
    assert (gray.batch_size, gray.device) == (5, "cpu")
    whole = config.model("whole")
    assert whole.module == tmp_path / "whole.pt"
    assert whole.weights is None
    assert whole.trusted is True
    assert (whole.mean, whole.std) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    dataset = config.dataset("csv-set")
    assert dataset.csv == (tmp_path / "sets" / "manifest.csv").resolve()
    assert dataset.root == dataset.csv.parent  # a manifest's root defaults to its folder
    assert dataset.classes == ("cat", "dog")
    assert config.cache_dir == tmp_path / "cache-here"
    assert config.model() == gray  # the first one


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(tmp_path / "nope.toml")
    assert "nope.toml" in str(info.value)


def test_malformed_toml(write_config) -> None:
    path = write_config('[[models]]\nname = "unterminated\n')
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "line" in str(info.value)  # says where


@pytest.mark.parametrize(
    ("extra", "where", "key"),
    [
        ("colour = 'red'\n" + MINIMAL, "", "colour"),
        (MINIMAL.replace('name = "net"', 'name = "net"\n    wieghts = "x.pt"'), "net", "wieghts"),
        (MINIMAL + '    extension = ".png"\n', "test", "extension"),
    ],
)
def test_unknown_keys_are_named(write_config, extra: str, where: str, key: str) -> None:
    with pytest.raises(ConfigError, match="unknown key") as info:
        load_config(write_config(extra))
    message = str(info.value)
    assert repr(key) in message
    assert where in message


_M = 'name = "m"\narchitecture = "resnet18"\nweights = "w.pt"\n'


@pytest.mark.parametrize(
    ("model_lines", "words"),
    [
        ('name = "m"\nweights = "w.pt"', ["exactly one of", "architecture"]),
        (_M + 'factory = "a:b"', ["exactly one of"]),
        ('name = "m"\narchitecture = "resnet18"', ["needs weights"]),
        (_M + "channels = 2", ["channels", "2"]),
        (_M + "mean = [0.5]", ["mean", "3"]),
        (_M + "input_size = [1, 2, 3]", ["input_size"]),
        (_M + "input_size = [0, 8]", ["input_size"]),
        (_M + 'device = "tpu"', ["device", "tpu"]),
        (_M + "batch_size = 0", ["batch_size"]),
        (_M + 'channels = "x"', ["'m'", "invalid"]),  # wrong types: no bare ValueError
        (_M + "mean = 0.5", ["'m'", "invalid"]),
        (_M + "factory_kwargs = 3", ["'m'", "invalid"]),
        ('architecture = "resnet18"\nweights = "w.pt"', ["name"]),
    ],
)
def test_invalid_model_entries(write_config, model_lines: str, words: list[str]) -> None:
    text = f'[[models]]\n{model_lines}\n[[datasets]]\nname = "d"\nroot = "r"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    for word in words:
        assert word in str(info.value)


def test_trusted_must_be_a_real_boolean(write_config) -> None:
    # bool("false") is True: a quoted value must not switch on unpickling
    text = MINIMAL.replace('weights = "weights/net.pt"', 'weights = "w.pt"\n    trusted = "false"')
    with pytest.raises(ConfigError, match="trusted"):
        load_config(write_config(text))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[[datasets]]\nname = "d"\nroot = "r"\n', ["[[models]]"]),
        ('[[models]]\nname = "m"\narchitecture = "resnet18"\nweights = "w.pt"\n', ["[[datasets]]"]),
        (MINIMAL.replace('root = "data/test"', ""), ["root", "csv"]),
        (MINIMAL + '    [[datasets]]\n    name = "test"\n    root = "x"\n', ["unique", "test"]),
        ('models = 3\n[[datasets]]\nname = "d"\nroot = "r"\n', ["[[models]]"]),
    ],
)
def test_invalid_structure(write_config, text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    for word in words:
        assert word in str(info.value)


def test_unknown_model_or_dataset_name_lists_known_ones(write_config) -> None:
    config = load_config(write_config(MINIMAL))
    with pytest.raises(ConfigError, match="no model named 'resnet'") as info:
        config.model("resnet")
    assert "net" in str(info.value)
    with pytest.raises(ConfigError, match="no dataset named 'val'") as info:
        config.dataset("val")
    assert "test" in str(info.value)


def test_config_errors_are_user_facing() -> None:
    assert issubclass(ConfigError, UserFacingError)


def test_model_lists_its_datasets(write_config) -> None:
    text = MINIMAL + '    [[datasets]]\n    name = "other"\n    root = "data/other"\n'
    config = load_config(write_config(text))
    assert config.datasets_for("net") == ["test", "other"]  # all, in config order
    limited = text.replace('name = "net"', 'name = "net"\n    datasets = ["other"]')
    assert load_config(write_config(limited)).datasets_for("net") == ["other"]
    unknown = text.replace('name = "net"', 'name = "net"\n    datasets = ["val"]')
    with pytest.raises(ConfigError, match="unknown datasets") as info:
        load_config(write_config(unknown))
    assert "'val'" in str(info.value)


def test_dataset_read_rules(write_config, tmp_path: Path) -> None:
    config = load_config(write_config(MINIMAL))
    assert config.dataset().link_roots == ()  # safe default: the root only
    assert config.dataset().max_pixels == DEFAULT_MAX_PIXELS
    text = MINIMAL.replace(
        'root = "data/test"', 'root = "data/test"\n    link_roots = ["../dvc/cache", "/mnt/annex"]'
    ).replace('root = "data/test"', 'root = "data/test"\n    max_pixels = 4000000')
    dataset = load_config(write_config(text)).dataset()
    assert dataset.link_roots == ((tmp_path / ".." / "dvc" / "cache").resolve(), Path("/mnt/annex"))
    assert dataset.max_pixels == 4_000_000


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('link_roots = "cache"', ["link_roots", "list"]),
        ("link_roots = [3]", ["link_roots", "list"]),
        ("max_pixels = 0", ["max_pixels", "0"]),
        ("max_pixels = 1e6", ["max_pixels", "1000000.0"]),
        ('max_pixels = "big"', ["max_pixels", "'big'"]),
        (f"max_pixels = {MAX_PIXELS_CAP + 1}", ["max_pixels", str(MAX_PIXELS_CAP)]),
    ],
)
def test_invalid_dataset_read_rules(write_config, line: str, words: list[str]) -> None:
    text = MINIMAL.replace('root = "data/test"', f'root = "data/test"\n    {line}')
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    for word in words:
        assert word in str(info.value)


def test_comparable_models_share_the_dataset_and_the_classes(write_config, tmp_path: Path) -> None:
    """Compare models' default B: models listing A's dataset with A's classes first, then those
    that may fit (no list, or classes from the checkpoint); declared other classes never."""
    entry = 'architecture = "resnet18"\nweights = "w.pt"\n'
    path = write_config(
        f"""
        [[models]]
        name = "a"
        {entry}classes = ["x", "y"]
        datasets = ["d"]
        [[models]]
        name = "other-classes"
        {entry}classes = ["x", "y", "z"]
        datasets = ["d"]
        [[models]]
        name = "unlisted"
        {entry}
        [[models]]
        name = "twin"
        {entry}classes = ["x", "y"]
        datasets = ["d"]
        [[models]]
        name = "elsewhere"
        {entry}classes = ["x", "y"]
        datasets = ["e"]
        [[datasets]]
        name = "d"
        root = "d"
        [[datasets]]
        name = "e"
        root = "e"
        """
    )
    config = load_config(path)
    assert config.comparable_models("a", "d") == ["twin", "unlisted"]
    assert config.comparable_models("unlisted", "d") == ["a", "other-classes", "twin"]
    assert config.comparable_models("elsewhere", "e") == ["unlisted"]


def test_sample_entries_declare_datasets_and_classes(sample_config) -> None:
    """Every sample model says what it is evaluated on, so no default view mismatches."""
    for model in sample_config.models:
        assert model.datasets and model.classes, model.name
    first = sample_config.model()
    assert first.name == "shapes-resnet (shortcut)" and "magenta mark" in first.description
    assert sample_config.comparable_models(first.name, "shapes-test")[0] == "shapes-resnet (clean)"
