"""Model loading: every way in, the class count from the checkpoint, and clear errors."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from core.config import ModelSpec
from core.data.models import architectures, load_model, read_state_dict
from core.errors import ModelLoadError, UserFacingError

SIZE = (32, 32)


def spec(**kwargs) -> ModelSpec:
    kwargs.setdefault("input_size", SIZE)
    kwargs.setdefault("device", "cpu")
    return ModelSpec(name="m", **kwargs)


def assert_same_outputs(original: nn.Module, loaded, channels: int = 3) -> None:
    torch.manual_seed(1)
    x = torch.randn(3, channels, *loaded.spec.input_size)
    with torch.inference_mode():
        expected = original.eval()(x)
        actual = loaded.module(x)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.fixture(scope="session")
def resnet7(tmp_path_factory) -> tuple[nn.Module, Path, Path]:
    """A random resnet18 with 7 classes, saved as .pt and .safetensors."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    folder = tmp_path_factory.mktemp("resnet7")
    torch.save(model.state_dict(), folder / "r18.pt")
    save_safetensors(model.state_dict(), folder / "r18.safetensors")
    return model, folder / "r18.pt", folder / "r18.safetensors"


# --- torchvision architecture + state_dict -------------------------------------------------


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_torchvision_state_dict_takes_class_count_from_checkpoint(resnet7, fmt: str) -> None:
    original, pt, st = resnet7
    loaded = load_model(spec(architecture="resnet18", weights=pt if fmt == "pt" else st))
    assert loaded.num_classes == 7
    assert loaded.module.fc.out_features == 7
    assert not loaded.module.training
    assert loaded.device.type == "cpu"
    assert loaded.input_shape == (3, *SIZE)
    assert_same_outputs(original, loaded)


def test_checkpoint_wrappers_and_data_parallel_prefix(sample_config, tmp_path: Path) -> None:
    digits = sample_config.model("digits-cnn")
    state = read_state_dict(digits.weights)
    prefixed = {f"module.{k}": v for k, v in state.items()}
    variants = {
        "wrapped.pt": {"state_dict": state, "epoch": 3},
        "model_state.pt": {"model_state_dict": state, "optimizer_state_dict": {}},
        "model.pt": {"model": state},
        "prefixed.pt": prefixed,
        "wrapped_prefixed.pt": {"state_dict": prefixed},
    }
    for name, content in variants.items():
        torch.save(content, tmp_path / name)
    save_safetensors(prefixed, tmp_path / "prefixed.safetensors")
    for name in [*variants, "prefixed.safetensors"]:
        read = read_state_dict(tmp_path / name)
        assert read.keys() == state.keys(), name
        assert all(torch.equal(read[k], state[k]) for k in state), name
    plain = load_model(digits)
    loaded = load_model(replace(digits, weights=tmp_path / "wrapped_prefixed.pt"))
    assert loaded.num_classes == 10
    assert_same_outputs(plain.module, loaded, channels=1)


def test_lightning_checkpoint_prefix_is_stripped_and_said(sample_config, tmp_path: Path) -> None:
    """``last.ckpt`` as PyTorch Lightning saves a LightningModule with ``self.model = ...``."""
    digits = sample_config.model("digits-cnn")
    state = read_state_dict(digits.weights)
    ckpt = {
        "state_dict": {
            **{f"model.{k}": v for k, v in state.items()},
            "loss_fn.weight": torch.ones(10),  # a Lightning module's own tensors, not the model's
        },
        "epoch": 12,
        "global_step": 1200,
        "hyper_parameters": {"lr": 0.01},
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    plain = load_model(digits)
    loaded = load_model(replace(digits, weights=tmp_path / "last.ckpt"))
    assert_same_outputs(plain.module, loaded, channels=1)
    assert any("'model.'" in note and "stripped" in note for note in loaded.warnings)
    assert not any("stripped" in note for note in plain.warnings)


def test_state_dict_prefix_settles_an_ambiguous_checkpoint(sample_config, tmp_path: Path) -> None:
    digits = sample_config.model("digits-cnn")
    state = read_state_dict(digits.weights)
    twice = {**{f"student.{k}": v for k, v in state.items()}}
    twice.update({f"teacher.{k}": torch.zeros_like(v) for k, v in state.items()})
    torch.save({"state_dict": twice}, tmp_path / "distil.ckpt")
    ambiguous = replace(digits, weights=tmp_path / "distil.ckpt")
    with pytest.raises(ModelLoadError, match=r"several prefixes \(student\., teacher\.\)"):
        load_model(ambiguous)
    loaded = load_model(replace(ambiguous, state_dict_prefix="student"))
    assert_same_outputs(load_model(digits).module, loaded, channels=1)
    with pytest.raises(ModelLoadError, match=r"no key .* starts with state_dict_prefix 'ema\.'"):
        load_model(replace(ambiguous, state_dict_prefix="ema."))


def test_unknown_architecture_lists_known_ones(resnet7) -> None:
    with pytest.raises(ModelLoadError, match="unknown architecture 'resnet19'") as info:
        load_model(spec(architecture="resnet19", weights=resnet7[1]))
    assert "resnet18" in str(info.value)
    assert "resnet18" in architectures()
    assert architectures() == sorted(architectures())


def test_checkpoint_of_another_architecture(resnet7) -> None:
    # same head name (fc), different body: strict loading must refuse, in one line
    with pytest.raises(ModelLoadError, match="does not fit") as info:
        load_model(spec(architecture="resnet34", weights=resnet7[1]))
    assert "layer1.2" in str(info.value)  # names keys resnet18 lacks
    assert "\n" not in str(info.value)
    # different head name: not a state_dict of this architecture at all
    with pytest.raises(ModelLoadError, match="not a state_dict of this architecture") as info:
        load_model(spec(architecture="mobilenet_v3_small", weights=resnet7[2]))
    assert "classifier" in str(info.value)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="checkpoint not found") as info:
        load_model(spec(architecture="resnet18", weights=tmp_path / "nope.pt"))
    assert "nope.pt" in str(info.value)


def test_corrupt_checkpoints(resnet7, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(resnet7[2].read_bytes()[:5000])
    truncated_pt = tmp_path / "truncated.pt"
    truncated_pt.write_bytes(resnet7[1].read_bytes()[:5000])
    for path in (garbage, truncated, truncated_pt):
        with pytest.raises(ModelLoadError, match="cannot read checkpoint") as info:
            load_model(spec(architecture="resnet18", weights=path))
        assert str(path) in str(info.value)
        assert "state_dict" in str(info.value)  # says what was expected


def test_unreadable_checkpoint_message_never_suggests_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint") as info:
        load_model(spec(architecture="resnet18", weights=path))
    assert "weights_only" not in str(info.value)
    assert "the file is damaged or not a checkpoint" in str(info.value)


def test_checkpoint_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(ModelLoadError, match="state_dict of tensors"):
        load_model(spec(architecture="resnet18", weights=path))


def test_config_class_list_must_match_outputs(sample_config) -> None:
    digits = sample_config.model("digits-cnn")
    with pytest.raises(ModelLoadError) as info:
        load_model(replace(digits, classes=tuple("abcdefghijklm")))
    assert "13" in str(info.value)
    assert "10" in str(info.value)
    named = load_model(replace(digits, classes=tuple("abcdefghij")))
    assert (named.num_classes, named.spec.classes) == (10, tuple("abcdefghij"))


def test_input_the_model_cannot_take(sample_config) -> None:
    digits = sample_config.model("digits-cnn")
    wrong = replace(digits, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(ModelLoadError, match="channels") as info:
        load_model(wrong)
    assert "(1, 3, 32, 32)" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_falls_back_to_cpu_with_a_warning(sample_config) -> None:
    loaded = load_model(replace(sample_config.model("digits-cnn"), device="cuda"))
    assert loaded.device.type == "cpu"
    assert any("cuda" in w and "cpu" in w for w in loaded.warnings)


def test_loaded_sample_matches_its_definition(digits_reference, digits_model) -> None:
    assert digits_model.num_classes == 10
    assert_same_outputs(digits_reference, digits_model, channels=1)


# --- user factory package.module:function ------------------------------------------------

NETS = """
from torch import nn


def _block(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


def build(num_classes=10, width=8):
    return nn.Sequential(
        *_block(3, width),
        nn.MaxPool2d(2),
        *_block(width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


def build_fixed():
    return build(num_classes=3, width=4)


def build_nothing():
    return "not a module"


class Net(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.features = nn.Sequential(*_block(3, 6), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(6, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
"""


@pytest.fixture
def user_package(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``<tmp>/<unique name>/nets.py`` next to where a config would be; cleaned from sys.modules."""
    name = f"userpkg_{uuid.uuid4().hex[:10]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "nets.py").write_text(textwrap.dedent(NETS))
    path_before = list(sys.path)
    yield tmp_path, name
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]
    assert sys.path == path_before  # loading must not leave the config's folder on sys.path


def import_nets(folder: Path, package: str):
    """Import the user package the way the user's own training code would."""
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(f"{package}.nets")
    finally:
        sys.path.remove(str(folder))


def test_factory_with_num_classes_from_checkpoint(user_package) -> None:
    folder, package = user_package
    torch.manual_seed(0)
    nets = import_nets(folder, package)
    original = nets.build(num_classes=4)
    weights = save_safetensors(original.state_dict(), folder / "w.safetensors")
    for name in [m for m in sys.modules if m.startswith(package)]:
        del sys.modules[name]  # load_model must find the package through base_dir alone
    loaded = load_model(spec(factory=f"{package}.nets:build", weights=weights, base_dir=folder))
    assert loaded.num_classes == 4
    assert_same_outputs(original, loaded)
    assert str(folder) not in sys.path


def test_factory_kwargs_are_passed(user_package) -> None:
    folder, package = user_package
    original = import_nets(folder, package).build(num_classes=6, width=12)
    torch.save(original.state_dict(), folder / "w.pt")
    target = f"{package}.nets:build"
    loaded = load_model(
        spec(factory=target, weights=folder / "w.pt", base_dir=folder, factory_kwargs={"width": 12})
    )
    assert loaded.module[0].out_channels == 12
    assert loaded.num_classes == 6
    assert_same_outputs(original, loaded)
    # without the kwargs the default width does not fit the checkpoint
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_model(spec(factory=target, weights=folder / "w.pt", base_dir=folder))
    # an explicit num_classes wins over the checkpoint, and must then fit it
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_model(
            spec(
                factory=target,
                weights=folder / "w.pt",
                base_dir=folder,
                factory_kwargs={"width": 12, "num_classes": 2},
            )
        )


def test_factory_without_num_classes(user_package) -> None:
    folder, package = user_package
    original = import_nets(folder, package).build_fixed()
    torch.save({"state_dict": original.state_dict()}, folder / "w.pt")
    loaded = load_model(
        spec(factory=f"{package}.nets:build_fixed", weights=folder / "w.pt", base_dir=folder)
    )
    assert loaded.num_classes == 3
    assert_same_outputs(original, loaded)


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("{p}.nets", ["package.module:function"]),
        ("{p}.nets:missing", ["no function", "'missing'"]),
        ("{p}.absent:build", ["cannot import", "{p}.absent"]),
        ("{p}.nets:build_nothing", ["not a torch.nn.Module"]),
    ],
)
def test_factory_errors(user_package, target: str, words: list[str]) -> None:
    folder, package = user_package
    torch.save({"0.weight": torch.zeros(4, 3, 3, 3)}, folder / "w.pt")
    model_spec = spec(factory=target.format(p=package), weights=folder / "w.pt", base_dir=folder)
    with pytest.raises(ModelLoadError) as info:
        load_model(model_spec)
    for word in words:
        assert word.format(p=package) in str(info.value)


# --- whole pickled modules ---------------------------------------------------------------


class _RunsCode:
    """Unpickling this creates a folder: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickled_module_refused_unless_trusted(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)
    )
    torch.save(original, tmp_path / "whole.pt")
    untrusted = spec(module=tmp_path / "whole.pt", base_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="arbitrary code") as info:
        load_model(untrusted)
    assert "trusted = true" in str(info.value)
    loaded = load_model(replace(untrusted, trusted=True))
    assert loaded.num_classes == 5
    assert_same_outputs(original, loaded)


def test_untrusted_pickle_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    torch.save(_RunsCode(marker), tmp_path / "evil.pt")
    with pytest.raises(ModelLoadError, match="arbitrary code"):
        load_model(spec(module=tmp_path / "evil.pt", base_dir=tmp_path))
    # as a state_dict it is read with weights_only=True, which refuses it too
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        load_model(spec(architecture="resnet18", weights=tmp_path / "evil.pt"))
    assert not marker.exists()


def test_trusted_pickle_of_a_class_defined_next_to_the_config(user_package) -> None:
    folder, package = user_package
    torch.manual_seed(0)
    original = import_nets(folder, package).Net(num_classes=5)
    torch.save(original, folder / "whole.pt")
    for name in [m for m in sys.modules if m.startswith(package)]:
        del sys.modules[name]  # as in a fresh process: only the config's folder has the class
    loaded = load_model(spec(module=folder / "whole.pt", trusted=True, base_dir=folder))
    assert type(loaded.module).__name__ == "Net"
    assert_same_outputs(original, loaded)


def test_trusted_pickle_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(spec(module=tmp_path / "absent.pt", trusted=True))
    torch.save({"w": torch.zeros(2)}, tmp_path / "dict.pt")
    with pytest.raises(ModelLoadError, match=r"not a torch\.nn\.Module"):
        load_model(spec(module=tmp_path / "dict.pt", trusted=True))
    (tmp_path / "garbage.pt").write_bytes(os.urandom(512))
    with pytest.raises(ModelLoadError, match="cannot unpickle"):
        load_model(spec(module=tmp_path / "garbage.pt", trusted=True))


def test_model_errors_are_user_facing() -> None:
    assert issubclass(ModelLoadError, UserFacingError)
