"""timm model entries: built with pretrained=False from the checkpoint's class count, weights read
as timm reads them, preprocessing from timm's data config unless the entry sets it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from core.config import load_config
from core.data.models import describe_preprocessing, load_model
from core.errors import ModelLoadError

torch.set_num_threads(2)
REPO = Path(__file__).resolve().parents[1]
# a narrow one-block vit_small_patch16_224 for 32×32 input: fast to build and to save
KWARGS = "{ img_size = 32, depth = 1, embed_dim = 48, num_heads = 2 }"


def tiny_vit(num_classes: int = 7) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_small_patch16_224",
        pretrained=False,
        num_classes=num_classes,
        img_size=32,
        depth=1,
        embed_dim=48,
        num_heads=2,
    ).eval()


def write_config(tmp_path: Path, weights: str, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    body = f"""
        [[models]]
        name = "vit"
        timm = "vit_small_patch16_224"
        factory_kwargs = {KWARGS}
        weights = "{weights}"
        device = "cpu"
        {extra}

        [[datasets]]
        name = "d"
        root = "data"
    """
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def test_checkpoint_class_count_ema_and_prefixes(tmp_path: Path) -> None:
    model = tiny_vit()
    plain = model.state_dict()
    ema = {k: v + 1 for k, v in plain.items()}  # EMA weights differ: timm prefers them
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in plain.items()}, "state_dict_ema": ema},
        tmp_path / "ckpt.pth",
    )
    loaded = load_model(load_config(write_config(tmp_path, "ckpt.pth")).model())
    assert loaded.num_classes == 7
    got = loaded.module.state_dict()
    assert all(torch.equal(got[k], ema[k]) for k in ema)
    save_file({f"module.{k}": v.contiguous() for k, v in plain.items()}, tmp_path / "w.safetensors")
    loaded = load_model(load_config(write_config(tmp_path, "w.safetensors")).model())
    got = loaded.module.state_dict()
    assert all(torch.equal(got[k], plain[k]) for k in plain)


def test_preprocessing_from_timm_unless_the_entry_sets_it(tmp_path: Path) -> None:
    save_file({k: v.contiguous() for k, v in tiny_vit().state_dict().items()}, tmp_path / "w.st")
    (tmp_path / "w.st").rename(tmp_path / "w.safetensors")
    cfg = timm.data.resolve_model_data_config(tiny_vit())
    spec = load_model(load_config(write_config(tmp_path, "w.safetensors")).model()).spec
    assert spec.input_size == (32, 32)  # the size the entry builds the model for
    assert (spec.mean, spec.std) == (tuple(cfg["mean"]), tuple(cfg["std"]))
    assert (spec.interpolation, spec.crop_pct) == (cfg["interpolation"], cfg["crop_pct"])
    assert describe_preprocessing(spec).endswith("— from timm")
    extra = 'mean = [0.1, 0.2, 0.3]\ncrop_pct = 1.0\ninterpolation = "bilinear"'
    spec = load_model(load_config(write_config(tmp_path, "w.safetensors", extra)).model()).spec
    assert spec.mean == (0.1, 0.2, 0.3) and spec.std == tuple(cfg["std"])
    assert (spec.interpolation, spec.crop_pct) == ("bilinear", 1.0)
    line = describe_preprocessing(spec)
    assert "bilinear" in line
    assert "from timm (input_size, std, crop_mode), the rest from the config" in line


def test_the_cache_key_is_the_same_before_and_after_timm_fills_in(tmp_path: Path) -> None:
    """The key of stored results is computed from the entry as configured, without loading the
    model; loading fills in timm's preprocessing, and the key must not change with it."""
    from core.data.datasets import ImageDataset
    from core.results.key import evaluation_key

    save_file({k: v.contiguous() for k, v in tiny_vit().state_dict().items()}, tmp_path / "w.st")
    (tmp_path / "w.st").rename(tmp_path / "w.safetensors")
    configured = load_config(write_config(tmp_path, "w.safetensors")).model()
    loaded = load_model(configured).spec
    assert loaded.mean != configured.mean  # timm filled it in
    dataset = ImageDataset("d", tmp_path, [], [f"c{i}" for i in range(7)])
    assert evaluation_key(configured, dataset) == evaluation_key(loaded, dataset)
    explicit = load_config(write_config(tmp_path, "w.safetensors", "mean = [0.1, 0.2, 0.3]"))
    assert evaluation_key(explicit.model(), dataset) != evaluation_key(configured, dataset)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_transform_equals_timms_eval_transform(tmp_path: Path, interpolation: str) -> None:
    save_file({k: v.contiguous() for k, v in tiny_vit().state_dict().items()}, tmp_path / "w.st")
    (tmp_path / "w.st").rename(tmp_path / "w.safetensors")
    extra = f'interpolation = "{interpolation}"'
    loaded = load_model(load_config(write_config(tmp_path, "w.safetensors", extra)).model())
    spec = loaded.spec
    reference = timm.data.create_transform(
        input_size=(3, *spec.input_size),
        interpolation=spec.interpolation,
        mean=spec.mean,
        std=spec.std,
        crop_pct=spec.crop_pct,
        crop_mode="center",
        is_training=False,
    )
    rng = np.random.default_rng(0)
    for shape in ((50, 41, 3), (29, 64, 3)):  # portrait and landscape, up and down scaling
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        expected = reference(image)
        got = loaded.transform(image)
        assert got.shape == expected.shape == (3, 32, 32)
        assert (got - expected).abs().max() <= 1e-6
        # the tensor path used by the evaluation: same geometry, antialiased resize on uint8
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
        fast = loaded.normalize(loaded.resize(tensor))
        assert fast.shape == expected.shape
        levels = ((fast - expected) * torch.tensor(spec.std)[:, None, None] * 255).abs()
        assert levels.mean() < 1.0  # documented: within about a grey level of PIL's resize


def test_unknown_timm_model_names_close_ones(tmp_path: Path) -> None:
    path = write_config(tmp_path, "w.safetensors")
    path.write_text(path.read_text().replace("vit_small_patch16_224", "vit_smal_patch16_224"))
    save_file({k: v.contiguous() for k, v in tiny_vit().state_dict().items()}, tmp_path / "w.st")
    (tmp_path / "w.st").rename(tmp_path / "w.safetensors")
    with pytest.raises(ModelLoadError, match=r"timm has no model 'vit_smal_patch16_224'.*close"):
        load_model(load_config(path).model())


def test_core_and_dashboard_modules_do_not_import_timm() -> None:
    code = (
        "import sys, core.data.models, core.explain.cam, core.config, dashboard.parts.cell; "
        "sys.exit('timm' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
