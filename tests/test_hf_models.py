"""``hf = "folder"`` model entries: transformers image classifiers saved with ``save_pretrained``.

Tiny random-init models (ViT, DeiT, BEiT, Swin, ConvNeXt, ResNet and a timm model in a
TimmWrapper) are built here and saved with their image processors into temporary folders, once
per module; nothing is downloaded. Against them:

* Grad-CAM and Grad-CAM++ equal pytorch-grad-cam with its transformers recipe (the tutorial's
  ``.logits`` wrapper and ``reshape_transform``) at the default target layer, to 1e-4;
* the preprocessed inputs and the evaluation's probabilities equal ``processor(images)`` →
  ``model(...).logits`` on the same files;
* an entry evaluates end to end through the dashboard's loader (AppTest), and a missing or bad
  folder is an error panel, never a traceback.

Every reference map must have a per-map std > 0.05, so no comparison can pass on blank maps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import transformers
from PIL import Image
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from streamlit.testing.v1 import AppTest
from torch import nn

from core.config import load_config
from core.data.datasets import open_dataset
from core.data.hf_models import processor_values
from core.data.images import load_tensor
from core.data.models import LoadedModel, describe_preprocessing, load_model
from core.errors import ModelLoadError
from core.explain.cam import cam, find_target_layer, grad_cam, grad_cam_pp, saliency
from core.results.evaluate import evaluate
from core.results.key import evaluation_key

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)
REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4
CLASSES = ["cat", "dog", "fox", "owl", "yak"]
LABELS = {"id2label": dict(enumerate(CLASSES)), "label2id": {c: i for i, c in enumerate(CLASSES)}}
VIT = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 3}
VIT |= {"intermediate_size": 96, "image_size": 32, "patch_size": 8, "num_labels": 5}
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def timm_wrapper() -> tuple[nn.Module, None]:
    """timm's vit_small at 32 px (one block) in transformers' TimmWrapper; the config carries
    timm's pretrained_cfg (made without weights), from which the wrapper's processor is read."""
    args = {"img_size": 32, "depth": 1, "embed_dim": 48, "num_heads": 2}
    cfg = timm.create_model("vit_small_patch16_224", pretrained=False, **args).pretrained_cfg
    cfg = {**cfg, "input_size": [3, 32, 32]}
    config = transformers.TimmWrapperConfig(
        architecture="vit_small_patch16_224", model_args=args, pretrained_cfg=cfg, **LABELS
    )
    return transformers.TimmWrapperForImageClassification(config), None


def square(side: int) -> dict[str, int]:
    return {"height": side, "width": side}


# name -> model and processor builder, default target layer, pytorch-grad-cam's reshape
BUILDERS: dict[str, Callable[[], tuple[nn.Module, object]]] = {
    "vit": lambda: (
        transformers.ViTForImageClassification(transformers.ViTConfig(**VIT, **LABELS)),
        transformers.ViTImageProcessor(size=square(32)),
    ),
    "deit": lambda: (
        transformers.DeiTForImageClassification(transformers.DeiTConfig(**VIT, **LABELS)),
        transformers.DeiTImageProcessor(size=square(36), crop_size=square(32)),
    ),
    "beit": lambda: (
        transformers.BeitForImageClassification(transformers.BeitConfig(**VIT, **LABELS)),
        transformers.BeitImageProcessor(size=square(32)),
    ),
    "swin": lambda: (
        transformers.SwinForImageClassification(
            transformers.SwinConfig(
                image_size=32,
                patch_size=2,
                embed_dim=12,
                depths=[1, 1],
                num_heads=[2, 2],
                window_size=4,
                num_labels=5,
                **LABELS,
            )
        ),
        transformers.ViTImageProcessor(size=square(32), resample=3, **IMAGENET),
    ),
    "convnext": lambda: (
        transformers.ConvNextForImageClassification(
            transformers.ConvNextConfig(
                num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5, **LABELS
            )
        ),
        transformers.ConvNextImageProcessor(size={"shortest_edge": 64}, **IMAGENET),
    ),
    "resnet": lambda: (
        transformers.ResNetForImageClassification(
            transformers.ResNetConfig(
                embedding_size=8,
                hidden_sizes=[8, 16],
                depths=[1, 1],
                layer_type="basic",
                num_labels=5,
                **LABELS,
            )
        ),
        transformers.ConvNextImageProcessor(
            size={"shortest_edge": 64}, resample=2, crop_pct=0.875, **IMAGENET
        ),
    ),
    "timm": timm_wrapper,
}
LAYERS = {
    "vit": "model.vit.layers.1.layernorm_before",
    "deit": "model.deit.layers.1.layernorm_before",
    "beit": "model.beit.layers.1.layernorm_before",
    "swin": "model.swin.encoder.layers.1.blocks.0.layernorm_before",
    "convnext": "model.convnext.encoder.stages.1",
    "resnet": "model.resnet.encoder.stages.1",
    "timm": "model.timm_model.blocks.0.norm1",
}


def tokens(prefix: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's ``reshape_transform`` for transformers' ViT (and Swin, prefix 0)."""

    def reshape(t: torch.Tensor) -> torch.Tensor:
        side = int((t.shape[1] - prefix) ** 0.5)
        return t[:, prefix:].reshape(t.size(0), side, side, t.size(2)).permute(0, 3, 1, 2)

    return reshape


RESHAPES = {"vit": tokens(1), "deit": tokens(2), "beit": tokens(1), "swin": tokens(0)}
RESHAPES |= {"timm": tokens(1)}


class HuggingfaceToTensorModelWrapper(nn.Module):
    """pytorch-grad-cam's tutorial wrapper: a transformers model that returns ``.logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits  # type: ignore[no-any-return]


def save(name: str, folder: Path) -> Path:
    torch.manual_seed(0)
    model, processor = BUILDERS[name]()
    model.eval().save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {name: save(name, root / name) for name in BUILDERS}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder test set: two smooth random images per class, of odd sizes and shapes."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    sizes = [(50, 41), (29, 64), (64, 64), (90, 70), (35, 33), (47, 80), (66, 41), (40, 40)]
    for i in range(10):
        h, w = sizes[i % len(sizes)]
        small = rng.integers(0, 256, (h // 4 + 2, w // 4 + 2, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
        (root / CLASSES[i % 5]).mkdir(exist_ok=True)
        image.save(root / CLASSES[i % 5] / f"{i}.png")
    return root


def write_config(tmp_path: Path, hf: Path | str, images: Path, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    body = f"""
        cache_dir = "cache"

        [[models]]
        name = "hf-model"
        hf = "{Path(hf).as_posix() if isinstance(hf, Path) else hf}"
        device = "cpu"
        {extra}

        [[datasets]]
        name = "test"
        root = "{images.as_posix()}"
    """
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


_LOADED: dict[str, LoadedModel] = {}


def loaded(name: str, folders: dict[str, Path], images: Path, tmp: Path) -> LoadedModel:
    if name not in _LOADED:
        _LOADED[name] = load_model(load_config(write_config(tmp, folders[name], images)).model())
    return _LOADED[name]


def files(images: Path) -> list[Path]:
    return sorted(images.rglob("*.png"))


def inputs(model: LoadedModel, paths: list[Path]) -> torch.Tensor:
    """The evaluation's own input path: uint8 tensor → resize → normalise."""
    return torch.stack([model.normalize(model.resize(load_tensor(p, 3))) for p in paths])


@dataclass
class Case:
    name: str
    model: LoadedModel
    x: torch.Tensor
    classes: torch.Tensor  # [2, 2]: predicted, another class


@pytest.fixture(scope="module", params=list(BUILDERS))
def case(request: pytest.FixtureRequest, folders, images, tmp_path_factory) -> Case:  # type: ignore[no-untyped-def]
    model = loaded(request.param, folders, images, tmp_path_factory.mktemp("cfg"))
    x = inputs(model, files(images)[:2])
    with torch.no_grad():
        pred = model.module(x).argmax(1)
    return Case(request.param, model, x, torch.stack([pred, (pred + 2) % 5], 1))


def reference(case: Case, method: type[GradCAM]) -> torch.Tensor:
    """pytorch-grad-cam's maps [2, 2, H, W], its transformers recipe, one call per class."""
    hf = case.model.module.model
    layer = case.model.module.get_submodule(LAYERS[case.name])
    maps = []
    with method(
        HuggingfaceToTensorModelWrapper(hf), [layer], reshape_transform=RESHAPES.get(case.name)
    ) as ref:
        for k in range(2):
            targets = [ClassifierOutputTarget(int(c)) for c in case.classes[:, k]]
            maps.append(torch.from_numpy(ref(case.x, targets)))
    result = torch.stack(maps, 1)
    checked = result if method is GradCAM else result[:, :1]
    assert (checked.flatten(2).std(2) > 0.05).all(), "reference maps are degenerate"
    return result


def test_default_target_layer(case: Case) -> None:
    assert find_target_layer(case.model.module, case.model.input_shape) == LAYERS[case.name]


def test_grad_cam_equals_pytorch_grad_cam(case: Case) -> None:
    ours = grad_cam(case.model.module, case.x, case.classes)
    assert (ours - reference(case, GradCAM)).abs().max() <= TOL


def test_grad_cam_pp_equals_pytorch_grad_cam(case: Case) -> None:
    ours = grad_cam_pp(case.model.module, case.x, case.classes)
    assert (ours - reference(case, GradCAMPlusPlus)).abs().max() <= TOL


def test_saliency_and_cam(case: Case) -> None:
    """Saliency: the input gradient's largest absolute channel value, as autograd gives it.
    CAM: equal to Grad-CAM where the head is global-average-pool + Linear (ResNet), refused
    with a reason elsewhere (class tokens, ConvNeXt's norm before its Linear)."""
    model, x = case.model.module, case.x[:1]
    got = saliency(model, x, case.classes[:1, 0])
    leaf = x.clone().requires_grad_(True)
    model(leaf)[0, int(case.classes[0, 0])].backward()
    expected = leaf.grad.abs().amax(1)  # type: ignore[union-attr]
    expected = (expected - expected.min()) / (expected.max() - expected.min() + 1e-7)
    assert got.shape == expected.shape and (got - expected).abs().max() <= TOL
    if case.name == "resnet":
        assert (
            cam(model, case.x, case.classes) - grad_cam(model, case.x, case.classes)
        ).abs().max() <= TOL
    else:
        with pytest.raises(ValueError):
            cam(model, case.x, case.classes)


def test_inputs_and_predictions_equal_the_processors(
    case: Case, images: Path, tmp_path: Path
) -> None:
    """The folder's processor (AutoImageProcessor) → model(...).logits against this project's
    tensor path and its evaluation, on the same files."""
    folder = case.model.spec.hf
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    paths = files(images)
    pil = [Image.open(p).convert("RGB") for p in paths]
    expected = processor(images=pil, return_tensors="pt")["pixel_values"]
    ours = inputs(case.model, paths)
    assert ours.shape == expected.shape
    scale = torch.tensor(case.model.spec.std)[:, None, None] * 255  # in grey levels
    levels = ((ours - expected) * scale).abs()
    if case.name == "timm":  # timm's transform resizes the PIL image: within about a level
        assert levels.mean() < 1.0
    else:  # transformers' torchvision backend: the same resize and crop, bit for bit
        assert levels.max() < 1e-3
    with torch.no_grad():
        logits = case.model.module.model(pixel_values=expected).logits
    dataset = open_dataset(load_config(write_config(tmp_path, folder, images)).dataset(), CLASSES)
    result = evaluate(case.model, dataset, tmp_path / "cache", maps=False)
    rows = result.predictions
    order = [paths.index(images / p) for p in rows["path"]]
    probs = logits.softmax(1).numpy()[order]
    assert np.abs(result.probs(rows["index"]) - probs).max() < 2e-3  # stored as float16
    assert (rows["pred"].to_numpy() == logits.argmax(1).numpy()[order]).all()
    assert list(dataset.classes) == CLASSES


def test_classes_come_from_id2label(folders: dict[str, Path], images: Path, tmp_path: Path) -> None:
    spec = load_config(write_config(tmp_path, folders["vit"], images)).model()
    assert spec.classes == tuple(CLASSES)
    placeholders = tmp_path / "placeholders"
    save("vit", placeholders)
    config = json.loads((placeholders / "config.json").read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(5)}  # transformers' defaults
    (placeholders / "config.json").write_text(json.dumps(config))
    spec = load_config(write_config(tmp_path, placeholders, images)).model()
    assert spec.classes is None  # the dataset's folders name the classes then
    assert load_model(spec).num_classes == 5


def test_preprocessing_from_the_processor_unless_the_entry_sets_it(
    folders: dict[str, Path], images: Path, tmp_path: Path
) -> None:
    spec = load_model(load_config(write_config(tmp_path, folders["convnext"], images)).model()).spec
    assert spec.input_size == (64, 64) and spec.crop_pct == 0.875 and spec.crop_mode == "center"
    assert spec.interpolation == "bicubic" and spec.mean == tuple(IMAGENET["image_mean"])
    line = describe_preprocessing(spec)
    assert "shorter side to 73, center crop" in line
    assert line.endswith("— from the folder's ConvNextImageProcessor")
    extra = 'mean = [0.1, 0.2, 0.3]\ncrop_pct = 1.0\ninterpolation = "bilinear"'
    config = write_config(tmp_path, folders["convnext"], images, extra)
    spec = load_model(load_config(config).model()).spec
    assert spec.mean == (0.1, 0.2, 0.3) and spec.std == tuple(IMAGENET["image_std"])
    assert (spec.interpolation, spec.crop_pct, spec.input_size) == ("bilinear", 1.0, (64, 64))
    taken = "(input_size, std, crop_mode), the rest from the config"
    assert describe_preprocessing(spec).endswith(
        f"from the folder's ConvNextImageProcessor {taken}"
    )
    deit = load_model(load_config(write_config(tmp_path, folders["deit"], images)).model()).spec
    assert "resize to 36×36, center crop" in describe_preprocessing(deit)


def test_processor_rules() -> None:
    """ConvNeXt's rule: below 384 px the shorter side to size / crop_pct and a center crop,
    from 384 px a straight resize; rescale and normalise folded into one mean/std."""
    small, _ = processor_values(transformers.ConvNextImageProcessor(size={"shortest_edge": 224}))
    assert (small["input_size"], small["crop_pct"], small["crop_mode"]) == (
        (224, 224),
        0.875,
        "center",
    )
    large, _ = processor_values(transformers.ConvNextImageProcessor(size={"shortest_edge": 384}))
    assert (large["input_size"], large["crop_pct"]) == ((384, 384), None)
    raw, _ = processor_values(
        transformers.ViTImageProcessor(
            do_rescale=False, image_mean=[127.5] * 3, image_std=[127.5] * 3
        )
    )
    assert raw["mean"] == raw["std"] == (0.5, 0.5, 0.5)
    plain, _ = processor_values(transformers.ViTImageProcessor(do_normalize=False))
    assert plain["mean"] == (0.0, 0.0, 0.0) and plain["std"] == (1.0, 1.0, 1.0)
    deit, _ = processor_values(
        transformers.DeiTImageProcessor(size=square(240), crop_size=square(224))
    )
    assert deit["crop_mode"] == "squash" and int(224 / deit["crop_pct"]) == 240
    _, problems = processor_values(transformers.ViTImageProcessor(resample=1))  # Lanczos
    assert list(problems) == ["interpolation"]


def test_the_key_follows_the_folder_not_the_loading(
    folders: dict[str, Path], images: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "vit"
    save("vit", folder)
    configured = load_config(write_config(tmp_path, folder, images)).model()
    loaded_spec = load_model(configured).spec
    assert loaded_spec.mean != configured.mean  # the processor filled it in
    dataset = open_dataset(load_config(write_config(tmp_path, folder, images)).dataset(), CLASSES)
    key = evaluation_key(configured, dataset)
    assert evaluation_key(loaded_spec, dataset) == key
    (folder / "README.md").write_text("notes")  # not something the results depend on
    assert evaluation_key(configured, dataset) == key
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    processor["image_mean"] = [0.4, 0.4, 0.4]
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    assert evaluation_key(configured, dataset) != key


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "hf folder not found"),
        ("hub-id", "hf folder not found"),
        ("empty", "has no config.json"),
        ("garbage-config", "cannot load"),
        ("no-weights", "cannot load"),
        ("other-weights", "lack"),
        ("no-processor", "no image processor could be read"),
        ("remote-code", "cannot load"),
        ("layer-name", 'write layer = "model.vit.layers.1.layernorm_before"'),
    ],
)
def test_bad_folders_are_clear_errors(
    setup: str, message: str, folders: dict[str, Path], images: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    if setup != "missing" and setup != "hub-id":
        folder.mkdir()
    if setup not in ("missing", "hub-id", "empty"):
        save("vit", folder)
    if setup == "garbage-config":
        (folder / "config.json").write_text("{not json")
    if setup == "no-weights":
        (folder / "model.safetensors").unlink()
    if setup == "other-weights":  # a ResNet's weights under a ViT config
        (folder / "model.safetensors").write_bytes(
            (folders["resnet"] / "model.safetensors").read_bytes()
        )
    if setup == "no-processor":
        (folder / "preprocessor_config.json").unlink()
    if setup == "remote-code":  # code in the folder is never run
        config = json.loads((folder / "config.json").read_text())
        config["auto_map"] = {
            "AutoConfig": "evil.Config",
            "AutoModelForImageClassification": "evil.Model",
        }
        config["model_type"] = "evil"
        (folder / "config.json").write_text(json.dumps(config))
        marker = tmp_path / "ran"
        (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    hf = "google/vit-base-patch16-224" if setup == "hub-id" else folder
    # transformers' own layer name, without the wrapper's "model."
    extra = 'layer = "vit.layers.1.layernorm_before"' if setup == "layer-name" else ""
    with pytest.raises(ModelLoadError, match=message):
        load_model(load_config(write_config(tmp_path, hf, images, extra)).model())
    assert not (tmp_path / "ran").exists()
    if setup == "no-processor":  # the entry can say what the processor would have
        extra = "input_size = [32, 32]\nmean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]"
        model = load_model(load_config(write_config(tmp_path, hf, images, extra)).model())
        assert describe_preprocessing(model.spec).endswith("— from the config")


def run_app(config: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(config))
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=180)
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def test_an_hf_entry_evaluates_end_to_end_in_the_dashboard(
    folders: dict[str, Path], images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, folders["vit"], images)
    project = load_config(config)
    dataset = open_dataset(project.dataset(), project.model().classes)
    result = evaluate(load_model(project.model()), dataset, project.cache_dir)  # as the CLI
    cells = result.predictions.groupby(["true", "pred"]).size()
    true, pred = cells.idxmax()
    at = run_app(config, monkeypatch, cell=f"{true},{pred}")
    assert not at.exception and not at.error
    captions = [c.value for c in at.caption]
    assert any("from the folder's ViTImageProcessor" in c for c in captions)
    assert any("Accuracy" in m.label for m in at.metric)
    assert any("at layer model.vit.layers.1.layernorm_before" in c for c in captions)
    heading = f"true *{CLASSES[true]}* → predicted *{CLASSES[pred]}*: {cells.max()} images"
    assert any(heading in h.value for h in at.subheader)
    cards = [h.value for h in at.html if "cam-card" in h.value]
    assert cards and cards[0].count('class="cam-card"') == cells.max()
    assert cards[0].count("<img ") == 3 * cells.max()  # the image, predicted and true maps
    assert "cannot be shown" not in cards[0]


def test_a_missing_folder_is_an_error_panel(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_app(write_config(tmp_path, "no-such-folder", images), monkeypatch)
    assert not at.exception
    assert any("hf folder not found" in e.value for e in at.error)


def test_transformers_is_imported_only_for_hf_entries(
    folders: dict[str, Path], images: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, folders["vit"], images)
    code = (
        "import sys, core, core.data.models, core.explain.cam, core.results.key, "
        "dashboard.parts.cell, dashboard.state.resources; from core.config import load_config; "
        f"load_config({str(config)!r}); sys.exit('transformers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_the_cli_evaluates_an_hf_entry_and_names_a_missing_folder(
    folders: dict[str, Path], images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.cli import main

    config = write_config(tmp_path, folders["resnet"], images)
    assert main(["evaluate", "--config", str(config), "--out", str(tmp_path / "p.csv")]) == 0
    table = (tmp_path / "p.csv").read_text().splitlines()
    assert len(table) == 1 + len(files(images)) and "prob_yak" in table[0]
    capsys.readouterr()
    config = write_config(tmp_path, "no-such-folder", images)
    assert main(["evaluate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "hf folder not found" in err and "Traceback" not in err
