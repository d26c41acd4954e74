"""Benchmark: predicted- and true-class Grad-CAMs for a batch, ours vs pytorch-grad-cam vs captum.

Run from the repository root: ``python bench/cam.py`` (about 3 minutes on an idle 2-core machine)
or ``python bench/cam.py --quick`` (a smoke run). Contenders share one model object (eval mode,
channels_last) and run interleaved, round by round, after a warm-up; the table reports medians.
Other processes on the machine skew the timings badly (2 intra-op threads that get descheduled
make every small op wait), so the CPU use just before and after the run is printed too.

* ours: one ``grad_cam`` call with ``[N, 2]`` classes (one forward, two gradients), layer passed
  by name (the dashboard detects it once per model);
* pytorch-grad-cam: two ``GradCAM`` calls, one per class set;
* captum: two ``LayerGradCam.attribute`` calls plus the same two-stage normalisation;
* bare forward: ``model(x)`` under ``torch.inference_mode()``.

``vit_b_16 @224`` (torchvision, random weights, head re-initialised) runs at its own batch size
(``--vit-batch``, default 8: one ViT-B forward of 64 images takes many seconds here) and is held
to its own targets (≥ 4× pytorch-grad-cam, ≤ 1.3× a bare forward); pytorch-grad-cam gets its
documented ``reshape_transform`` (class token dropped, 14×14 grid); captum's ``LayerGradCam``
has no token reshape, so that column is empty.

``hf ViT-B/16 @224`` is transformers' ``ViTForImageClassification(ViTConfig(num_labels=1000))``
(random init, nothing downloaded) as an ``hf = ...`` entry loads it (``HfClassifier``, which
returns ``.logits``), held to the same targets at the same batch size; pytorch-grad-cam gets the
same wrapper (its tutorial's ``.logits`` wrapper) and the same ``reshape_transform`` at the same
layer, ``vit.layers[-1].layernorm_before``.

The ratio columns are medians of per-round ratios (the contenders of one round ran
back to back, in an order that rotates from round to round). The last two give the same ratios
in this process's CPU time (``time.process_time``), which other processes on a shared machine
disturb far less than wall time; the verdicts are given for both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from captum.attr import LayerGradCam
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "sample_models"))

from core.explain.cam import find_target_layer, grad_cam  # noqa: E402

SPEED_UP_TARGET = 6.0
FORWARD_RATIO_TARGET = 1.2


@dataclass
class Case:
    name: str
    model: nn.Module
    shape: tuple[int, int, int]
    rounds: int
    reshape: Callable[[Tensor], Tensor] | None = None  # pytorch-grad-cam's reshape_transform
    batch: int | None = None  # None: --batch
    speed_up_target: float = SPEED_UP_TARGET
    ratio_target: float = FORWARD_RATIO_TARGET


def vit_b_16() -> nn.Module:
    """torchvision's ViT-B/16 with its zero-initialised head re-initialised (else every map is
    blank and every gradient zero)."""
    model = torchvision.models.vit_b_16(weights=None)
    nn.init.normal_(model.heads.head.weight, std=0.02)
    return model


def hf_vit_b_16() -> nn.Module:
    """transformers' ViT-B/16 (random init) wrapped as an ``hf = ...`` entry loads it."""
    import transformers

    from core.data.hf_models import HfClassifier

    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=1000))
    return HfClassifier(model.eval(), patch_size=(16, 16))


def vit_tokens(t: Tensor) -> Tensor:
    """pytorch-grad-cam's ``vit_reshape_transform``: drop the class token, 14×14 grid."""
    return t[:, 1:].reshape(t.size(0), 14, 14, t.size(2)).permute(0, 3, 1, 2)


def conv_blocks(channels: tuple[int, ...] = (32, 64, 128, 256), size: int = 128) -> nn.Module:
    """conv → ReLU → BatchNorm → MaxPool → Dropout blocks, then Flatten + Linear (10 classes)."""
    blocks: list[nn.Module] = []
    c_in = 3
    for c_out in channels:
        blocks.append(
            nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.ReLU(),
                nn.BatchNorm2d(c_out),
                nn.MaxPool2d(2),
                nn.Dropout(0.1),
            )
        )
        c_in = c_out
    side = size // 2 ** len(channels)
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(c_in * side * side, 10))


def digits_model() -> nn.Module:
    from digits_model import build  # sample_models/digits_model.py

    model = build(num_classes=10)
    weights = ROOT / "sample_models" / "digits" / "weights.safetensors"
    if weights.exists():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(weights)))
    return model


def normalise(raw: Tensor, size: tuple[int, int]) -> Tensor:
    """pytorch-grad-cam's normalisation: ReLU, min-max, bilinear resize, min-max (eps 1e-7)."""

    def minmax(m: Tensor) -> Tensor:
        flat = m.flatten(1)
        flat = flat - flat.amin(1, keepdim=True)
        return (flat / (1e-7 + flat.amax(1, keepdim=True))).view(m.shape)

    maps = minmax(raw.clamp_min(0))
    return minmax(F.interpolate(maps[:, None], size=size, mode="bilinear")[:, 0])


def contenders(case: Case, x: Tensor, cls: Tensor) -> dict[str, Callable[[], object]]:
    model = case.model
    layer_name = find_target_layer(model, case.shape)
    layer = model.get_submodule(layer_name)
    pgc = GradCAM(model, [layer], reshape_transform=case.reshape)
    captum = LayerGradCam(model, layer)
    size = case.shape[1:]

    def ours() -> object:
        return grad_cam(model, x, cls, layer=layer_name)

    def pytorch_grad_cam() -> object:
        return [pgc(x, [ClassifierOutputTarget(int(c)) for c in cls[:, k]]) for k in range(2)]

    def captum_gc() -> object:
        return [
            normalise(captum.attribute(x, target=cls[:, k])[:, 0].detach(), size) for k in range(2)
        ]

    def bare() -> object:
        with torch.inference_mode():
            return model(x)

    fns = {"ours": ours, "pgc": pytorch_grad_cam, "captum": captum_gc, "bare": bare}
    if case.reshape is not None:  # captum has no token reshape
        del fns["captum"]
    return fns


def run_case(case: Case, batch: int) -> dict[str, float]:
    """Median images/s of every contender (maps for 2 classes per image; bare = 1 forward), and
    the ratios ``speed_up`` (pgc time ÷ ours) and ``ratio`` (ours time ÷ bare) as medians of the
    per-round ratios: contenders of one round share the machine's state, so a slow spell on a
    shared VM cancels out of the ratio instead of landing on whichever ran during it."""
    model = case.model.eval().to(memory_format=torch.channels_last)
    torch.manual_seed(1)
    x = torch.randn(batch, *case.shape).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        pred = model(x).argmax(1)
    true = torch.randint(0, int(model(x[:1]).shape[1]), (batch,))
    fns = contenders(case, x, torch.stack([pred, true], 1))
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}  # this process's CPU time
    keys = list(fns)
    for rnd in range(case.rounds + 1):  # round 0 is the warm-up
        for key in keys[rnd % len(keys) :] + keys[: rnd % len(keys)]:  # the order rotates
            start, start_cpu = time.perf_counter(), time.process_time()
            fns[key]()
            if rnd:
                times[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - start_cpu)
    rates = {k: batch / statistics.median(v) for k, v in times.items()}
    rates.setdefault("captum", float("nan"))
    pairs = list(zip(times["ours"], times["pgc"], times["bare"], strict=True))
    rates["speed_up"] = statistics.median(p / o for o, p, _ in pairs)
    rates["ratio"] = statistics.median(o / b for o, _, b in pairs)
    pairs = list(zip(cpu["ours"], cpu["pgc"], cpu["bare"], strict=True))
    rates["cpu_speed_up"] = statistics.median(p / o for o, p, _ in pairs)
    rates["cpu_ratio"] = statistics.median(o / b for o, _, b in pairs)
    return rates


def cases(quick: bool, vit_batch: int = 8) -> list[Case]:
    """The six models; small models get more rounds (each round takes milliseconds)."""
    torch.manual_seed(0)
    big = 64 if quick else 224

    def rounds(n: int) -> int:
        return 1 if quick else n

    return [
        Case(
            f"resnet18 @{big}", torchvision.models.resnet18(weights=None), (3, big, big), rounds(7)
        ),
        Case(
            f"mobilenet_v3_small @{big}",
            torchvision.models.mobilenet_v3_small(weights=None),
            (3, big, big),
            rounds(10),
        ),
        Case("conv-block Sequential @128", conv_blocks(), (3, 128, 128), rounds(10)),
        Case("digits CNN @32", digits_model(), (1, 32, 32), rounds(40)),
        Case(
            "vit_b_16 @224",
            vit_b_16(),
            (3, 224, 224),
            rounds(3),
            reshape=vit_tokens,
            batch=2 if quick else vit_batch,
            speed_up_target=4.0,
            ratio_target=1.3,
        ),
        Case(
            "hf ViT-B/16 @224",
            hf_vit_b_16(),
            (3, 224, 224),
            rounds(3),
            reshape=vit_tokens,
            batch=2 if quick else vit_batch,
            speed_up_target=4.0,
            ratio_target=1.3,
        ),
    ]


def cpu_busy(seconds: float = 1.0) -> str:
    """Share of the machine's CPU time in use over ``seconds`` (Linux /proc/stat), as text."""

    def sample() -> tuple[int, int]:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, total

    try:
        (idle0, total0), _, (idle1, total1) = sample(), time.sleep(seconds), sample()
    except (OSError, ValueError, IndexError):
        return "unknown"
    return f"{100 * (1 - (idle1 - idle0) / max(total1 - total0, 1)):.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (64 px, 1 round)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--only", default="", help="run the models whose name contains this")
    parser.add_argument("--vit-batch", type=int, default=8, help="batch size of the ViT row")
    args = parser.parse_args()
    torch.set_num_threads(2)
    batch = 8 if args.quick else args.batch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}")
    print(f"machine CPU use in the second before the run: {cpu_busy()}\n")
    print(
        "| model | ours img/s | pytorch-grad-cam img/s | captum img/s | bare forward img/s "
        "| ours ÷ pgc speed-up | ours time ÷ bare-forward time "
        "| speed-up (CPU time) | ÷ bare forward (CPU time) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for case in [c for c in cases(args.quick, args.vit_batch) if args.only in c.name]:
        r = run_case(case, case.batch or batch)
        speed_up, ratio = r["speed_up"], r["ratio"]
        print(
            f"| {case.name} | {r['ours']:.1f} | {r['pgc']:.1f} | {r['captum']:.1f} "
            f"| {r['bare']:.1f} | {speed_up:.1f}× | {ratio:.2f} "
            f"| {r['cpu_speed_up']:.1f}× | {r['cpu_ratio']:.2f} |",
            flush=True,
        )
        verdicts.append((case, r))
    print()
    for case, r in verdicts:
        print(f"{case.name} (batch {case.batch or batch}):")
        for clock, speed_up, ratio in (
            ("wall time", r["speed_up"], r["ratio"]),
            ("CPU time", r["cpu_speed_up"], r["cpu_ratio"]),
        ):
            ok1 = "PASS" if speed_up >= case.speed_up_target else "FAIL"
            ok2 = "PASS" if ratio <= case.ratio_target else "FAIL"
            print(f"  {clock}: speed-up ≥ {case.speed_up_target:g}× pgc {ok1}; ", end="")
            print(f"time ≤ {case.ratio_target:g}× bare forward {ok2}")
    print(f"\nmachine CPU use in the second after the run: {cpu_busy()}")


if __name__ == "__main__":
    main()
