"""The Ray engine: same store, same values as the in-process engine; a real two-node cluster.

Every test that starts Ray runs it in a network and PID namespace of its own (``unshare``), so
Ray's traffic stays on 127.0.0.1 and every Ray process dies with the namespace, also when a test
fails or times out; the cluster is stopped with ``ray stop --force`` on any exit as well.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import load_config
from core.data.datasets import ImageDataset, open_dataset
from core.results import Results, open_results
from core.results.evaluate import evaluate, map_layer
from core.results.local_engine import _forward_with_maps, _with_embeddings
from core.results.ray_engine import ModelActor, Placement, decode_batch
from tests.conftest import REPO

RAY_TIMEOUT = 420  # seconds: Ray's start and the workers' torch import are slow on 2 shared cores


def _can_unshare() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip not installed"
    probe = subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if probe.returncode == 0 else f"cannot unshare (needs root): {probe.stderr}"


def in_namespace(script: str, timeout: int = RAY_TIMEOUT) -> subprocess.CompletedProcess:
    """Run a bash script inside fresh network + PID namespaces with only loopback up."""
    reason = _can_unshare()
    if reason:
        pytest.skip(f"Ray tests need a network namespace: {reason}")
    ray_tmp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit 107 bytes
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": ray_tmp,
        "RAY_AUTH_MODE": "token",  # every process of the cluster gets the token from here,
        "RAY_AUTH_TOKEN": secrets.token_hex(32),  # so none is written to ~/.ray
    }
    body = "set -u\ntrap 'ray stop --force >/dev/null 2>&1' EXIT\nip link set lo up\n" + script
    try:
        return subprocess.run(
            ["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", body],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def config_for(folder: Path, sample_config, root: Path) -> Path:
    """A config with the sample's digits model and ``root`` as dataset "digits"."""
    spec = sample_config.model("digits-cnn")
    path = folder / "config.toml"
    path.write_text(
        textwrap.dedent(f"""
        [[models]]
        name = "digits-cnn"
        factory = "digits_model:build"
        weights = "{spec.weights.as_posix()}"
        input_size = [32, 32]
        channels = 1
        mean = [0.5]
        std = [0.5]

        [[datasets]]
        name = "digits"
        root = "{root.as_posix()}"
        """)
    )
    shutil.copy2(spec.base_dir / "digits_model.py", folder / "digits_model.py")
    return path


def assert_same_results(ray: Results, local: Results) -> None:
    """Same rows and classes; probabilities ≤ 1e-5 (float32 columns), maps to float16 precision."""
    a, b = ray.predictions, local.predictions
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["pred"], b["pred"])
    np.testing.assert_array_equal(a["runner_up"], b["runner_up"])
    for column in ("confidence", "true_prob", "runner_up_prob"):
        np.testing.assert_allclose(a[column], b[column], atol=1e-5)
    rows = a["index"].to_numpy()
    np.testing.assert_allclose(ray.probs(rows), local.probs(rows), atol=1e-3)  # float16
    assert ray.has_maps and local.has_maps
    np.testing.assert_allclose(
        ray.maps(rows).astype(np.float32), local.maps(rows).astype(np.float32), rtol=2e-3, atol=1e-3
    )
    assert [s.path for s in ray.skipped] == [s.path for s in local.skipped]
    assert ray.has_embeddings and local.has_embeddings
    embedded = ray.embeddings[rows].astype(np.float32)
    assert np.abs(embedded).max() > 0.1  # the head's input, not an empty column
    np.testing.assert_allclose(embedded, local.embeddings[rows].astype(np.float32), atol=2e-3)


@pytest.fixture(scope="module")
def local_digits(tmp_path_factory, sample_config, digits_model) -> Results:
    """The in-process engine's result on the whole digits sample."""
    dataset = open_dataset(sample_config.dataset("digits-test"), digits_model.spec.classes)
    out = tmp_path_factory.mktemp("local") / "result"
    return evaluate(digits_model, dataset, out=out, num_workers=0)


def test_importing_core_and_the_dashboard_does_not_import_ray() -> None:
    modules = [
        "core",
        "core.results.evaluate",
        "core.results.local_engine",
        "core.cli",
        "core.results",
    ]
    modules += [  # every module but the pages (importing a page runs it)
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for p in sorted((REPO / "dashboard").rglob("*.py"))
        if "views" not in p.parts
    ]
    code = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
    code += "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "dashboard.app" in modules
    assert done.stdout.strip() == "[]", done.stdout


def test_actor_equals_the_in_process_forward_pass(sample_config, digits_model) -> None:
    """The actor's logits and raw maps, on other batch boundaries, equal the in-process ones."""
    spec = digits_model.spec
    dataset = open_dataset(sample_config.dataset("digits-test"), spec.classes)
    layer, shape = map_layer(digits_model) or pytest.fail("digits has a map layer")
    rows = np.arange(0, 540, 7)
    import pyarrow as pa

    manifest = pa.table(
        {
            "row": rows,
            "path": [dataset.samples[i][0] for i in rows],
            "label": [dataset.samples[i][1] for i in rows],
        }
    )
    decoded = decode_batch(manifest, str(dataset.root), spec.channels, spec.input_size)
    assert (decoded["error"] == "").all()
    table = ModelActor(spec, layer, shape, threads=1, embeddings=True)(decoded)
    logits = np.stack(table["logits"].to_numpy(zero_copy_only=False))
    maps = np.stack(table["maps"].to_numpy(zero_copy_only=False)).reshape(len(rows), 2, *shape)

    data = dataset.with_transform(digits_model.resize, spec.channels, tensors=True)
    images = torch.stack([data[int(i)].image for i in rows[:32]])  # type: ignore[misc]
    inputs = digits_model.normalize(images.contiguous(memory_format=torch.channels_last))
    labels = torch.tensor([dataset.samples[i][1] for i in rows[:32]])
    forward = _with_embeddings(digits_model, _forward_with_maps(digits_model, layer))
    ref_logits, ref_maps, ref_embeddings = forward(inputs, labels)
    assert ref_maps is not None and float(ref_maps.abs().max()) > 0.1
    np.testing.assert_array_equal(logits[:32].argmax(1), ref_logits.argmax(1).numpy())
    probs = torch.from_numpy(logits[:32]).softmax(1).numpy()
    np.testing.assert_allclose(probs, ref_logits.softmax(1).numpy(), atol=1e-5)
    np.testing.assert_allclose(maps[:32], ref_maps.numpy(), atol=1e-3)
    embeddings = np.stack(table["embeddings"].to_numpy(zero_copy_only=False))
    assert ref_embeddings is not None and embeddings.shape == (len(rows), 128)
    np.testing.assert_allclose(embeddings[:32], ref_embeddings.float().numpy(), atol=2e-3)


def test_an_unreadable_file_becomes_a_row_with_its_reason(tmp_path: Path, digits_subset) -> None:
    root = digits_subset(per_class=1)
    (root / "3" / "broken.png").write_bytes(b"not a png")
    dataset = ImageDataset("d", root, [("3/broken.png", 3), *_listing(root)[:2]], [])
    import pyarrow as pa

    manifest = pa.table(
        {
            "row": np.arange(3),
            "path": [p for p, _ in dataset.samples],
            "label": [lab for _, lab in dataset.samples],
        }
    )
    decoded = decode_batch(manifest, str(root), 1, (32, 32))
    assert decoded["error"][0].startswith("UnidentifiedImageError")
    assert decoded["error"][0] == dataset.with_transform(lambda x: x, 1, tensors=True)[0].error
    assert list(decoded["error"][1:]) == ["", ""] and decoded["image"][1:].any()


def _listing(root: Path) -> list[tuple[str, int]]:
    files = sorted(root.glob("*/*.png"))
    return [(f"{p.parent.name}/{p.name}", int(p.parent.name)) for p in files]


def test_placement_leaves_cpus_for_decoding_and_uses_every_gpu() -> None:
    cpu_nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}] * 2
    cpu = Placement.for_cluster([*cpu_nodes, {"Alive": False, "Resources": {"CPU": 64.0}}])
    assert (cpu.actors, cpu.gpus_per_actor, cpu.nodes, cpu.threads) == (2, 0.0, 2, 2)
    assert cpu.cpus_per_actor < 1  # a whole CPU per actor deadlocks a small cluster
    gpu = Placement.for_cluster([{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 8.0}}] * 8)
    assert (gpu.actors, gpu.gpus_per_actor, gpu.gpus) == (64, 1.0, 64.0)


@pytest.mark.timeout(RAY_TIMEOUT + 60)
def test_two_node_cluster_equals_in_process(tmp_path: Path, sample_config, local_digits) -> None:
    root = sample_config.dataset("digits-test").root
    config = config_for(tmp_path, sample_config, root)
    out = tmp_path / "ray-result"
    port = 6391
    script = f"""
    ray start --head --port={port} --num-cpus=2 --include-dashboard=false --disable-usage-stats
    ray start --address=127.0.0.1:{port} --num-cpus=2 --disable-usage-stats
    python -m core evaluate --config {config} --engine ray --address 127.0.0.1:{port} \\
        --no-cache --out {out}/
    """
    done = in_namespace(textwrap.dedent(script))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ray: 2 node(s), 4 CPUs, 0 GPUs; 2 model actor(s) on CPU" in done.stderr
    assert f"predicting: {len(local_digits.predictions)}/540" in done.stderr
    assert_same_results(open_results(out), local_digits)


@pytest.mark.timeout(RAY_TIMEOUT + 60)
def test_local_ray_survives_a_killed_actor_and_skips_a_corrupt_file(
    tmp_path: Path, sample_config, digits_subset, digits_model
) -> None:
    root = digits_subset(per_class=6)
    (root / "8" / "broken.png").write_bytes(b"garbage")
    config = config_for(tmp_path, sample_config, root)
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "ray-result"
    script = f"python -m tests.ray_kill_job {config} digits {out} {markers}\n"
    done = in_namespace(script)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ray: 1 node(s)" in done.stderr
    assert (markers / "killed").exists(), "the actor was never killed"
    assert len((markers / "starts").read_text().split()) >= 2  # restarted after the kill

    ray = open_results(out)
    assert [(s.path, bool(s.reason)) for s in ray.skipped] == [("8/broken.png", True)]
    dataset = open_dataset(load_config(config).dataset("digits"), digits_model.spec.classes)
    local = evaluate(digits_model, dataset, out=tmp_path / "local", batch_size=16, num_workers=0)
    assert len(ray.predictions) == 60
    assert_same_results(ray, local)


def test_address_without_the_ray_engine_is_a_clear_error(capsys, sample_config) -> None:
    from core.cli import main

    config = str(REPO / "sample_models" / "config.toml")
    code = main(["evaluate", "--config", config, "--address", "h:1"])
    assert code == 2
    assert "--address needs --engine ray" in capsys.readouterr().err
