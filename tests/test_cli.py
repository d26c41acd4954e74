"""``python -m core evaluate`` end to end on the bundled sample, and its error handling."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.cli import main

REPO = Path(__file__).resolve().parents[1]


def project_config(folder: Path, sample_config, extra: str = "") -> Path:
    """A copy of the sample's digits entries in ``folder``, with absolute paths to its files.

    The cache then lives in ``folder``, never in the repository.
    """
    model = sample_config.model("digits-cnn")
    dataset = sample_config.dataset("digits-test")
    shutil.copy2(model.base_dir / "digits_model.py", folder / "digits_model.py")
    path = folder / "config.toml"
    path.write_text(
        f"""
cache_dir = "cache"

[[models]]
name = "{model.name}"
factory = "{model.factory}"
weights = "{model.weights.as_posix()}"
input_size = {list(model.input_size)}
channels = {model.channels}
mean = {list(model.mean)}
std = {list(model.std)}

[[datasets]]
name = "{dataset.name}"
root = "{dataset.root.as_posix()}"
{extra}
""",
        encoding="utf-8",
    )
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def printed_matrix(stdout: str) -> pd.DataFrame:
    """The confusion matrix the CLI printed, as a DataFrame of ints (rows: true classes)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("confusion matrix"))
    header = lines[start + 1].split()
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("true "):
            break
        _, name, *counts = line.split()
        rows[name] = [int(c) for c in counts]
    return pd.DataFrame.from_dict(rows, orient="index", columns=header)


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory, sample_config):
    folder = tmp_path_factory.mktemp("cli")
    config = project_config(folder, sample_config)
    out = folder / "out" / "predictions.csv"
    done = run_cli("evaluate", "--config", str(config), "--out", str(out), "--workers", "0")
    return config, done, out


def test_csv_export_on_the_sample(csv_run, sample_config) -> None:
    config, done, out = csv_run
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    root = sample_config.dataset("digits-test").root
    pngs = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())

    table = pd.read_csv(out, dtype={"true": str, "pred": str})
    assert {"path", "true", "pred", "confidence"} <= set(table.columns)
    assert len(table) == len(pngs)
    assert sorted(table["path"]) == pngs
    assert (table["true"] == table["path"].str.split("/").str[0]).all()  # class names
    assert set(table["pred"]) <= set(classes)
    assert table["confidence"].between(0, 1).all()
    probs = table[[f"prob_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=2e-3)  # stored as float16
    np.testing.assert_allclose(table["confidence"], probs.max(axis=1), rtol=1e-3)
    assert (np.array(classes)[probs.argmax(axis=1)] == table["pred"]).all()

    printed = re.search(r"^accuracy: ([0-9.]+)$", done.stdout, re.MULTILINE)
    assert printed is not None, done.stdout
    assert float(printed.group(1)) == pytest.approx(
        (table["true"] == table["pred"]).mean(), abs=5e-5
    )
    assert f"images: {len(pngs)}" in done.stdout
    assert f"wrote {len(pngs)} rows" in done.stdout

    expected = pd.crosstab(table["true"], table["pred"]).reindex(
        index=classes, columns=classes, fill_value=0
    )
    matrix = printed_matrix(done.stdout)
    assert matrix.index.tolist() == classes
    assert matrix.columns.tolist() == classes
    np.testing.assert_array_equal(matrix.to_numpy(), expected.to_numpy())

    assert any((config.parent / "cache" / "results").glob("*/result.json"))


def test_parquet_export_matches_csv(csv_run, capsys) -> None:
    config, first, csv = csv_run
    assert first.returncode == 0, first.stderr
    out = config.parent / "predictions.parquet"
    assert main(["evaluate", "--config", str(config), "--out", str(out)]) == 0  # a cache hit
    parquet = pd.read_parquet(out)
    table = pd.read_csv(csv, dtype={"true": str, "pred": str})
    assert parquet.columns.tolist() == table.columns.tolist()
    assert parquet["path"].tolist() == table["path"].tolist()
    assert parquet["true"].tolist() == table["true"].tolist()
    assert parquet["pred"].tolist() == table["pred"].tolist()
    np.testing.assert_allclose(parquet["confidence"], table["confidence"], rtol=1e-6)
    assert f"wrote {len(table)} rows" in capsys.readouterr().out


def test_a_second_evaluate_reads_stored_results_without_torch(csv_run) -> None:
    """Unchanged inputs: the report comes from the stored results, and neither torch nor the
    model is loaded (importing torch alone takes seconds)."""
    config, first, _ = csv_run
    assert first.returncode == 0, first.stderr
    code = (
        "import sys\nfrom core.cli import main\n"
        f"code = main(['evaluate', '--config', {str(config)!r}])\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch', code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.stdout.splitlines()[-1] == "no torch 0", done.stderr
    assert "stored results of unchanged inputs" in done.stderr
    assert printed_matrix(done.stdout).equals(printed_matrix(first.stdout))


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[[models]\nname = 'x'\n")
    done = run_cli("evaluate", "--config", str(config), "--out", str(tmp_path / "x.csv"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert "not valid TOML" in lines[0] and str(config) in lines[0]
    assert not (tmp_path / "x.csv").exists()


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize(
    ("extra", "args", "words"),
    [
        ("colour = 1", [], ["unknown key", "colour"]),
        ("", ["--model", "resnet"], ["no model named 'resnet'", "digits-cnn"]),
        ("", ["--dataset", "val"], ["no dataset named 'val'"]),
        ('[[datasets]]\nname = "gone"\nroot = "nowhere"', ["--dataset", "gone"], ["not found"]),
    ],
)
def test_user_errors_in_process(tmp_path, capsys, sample_config, extra, args, words) -> None:
    config = project_config(tmp_path, sample_config, extra)
    code = main(["evaluate", "--config", str(config), "--out", str(tmp_path / "x.csv"), *args])
    assert code == 2
    line = _error_line(capsys)
    for word in words:
        assert word in line


def test_missing_config_and_bad_out_suffix(tmp_path: Path, capsys, sample_config) -> None:
    assert main(["evaluate", "--config", str(tmp_path / "absent.toml"), "--out", "x.csv"]) == 2
    assert "not found" in _error_line(capsys)
    config = project_config(tmp_path, sample_config)
    assert main(["evaluate", "--config", str(config), "--out", str(tmp_path / "x.xlsx")]) == 2
    assert ".csv or .parquet" in _error_line(capsys)


def test_checkpoint_that_does_not_fit_is_one_line(tmp_path: Path, capsys, sample_config) -> None:
    config = project_config(tmp_path, sample_config)
    text = config.read_text().replace(
        "channels =", "factory_kwargs = { num_classes = 5 }\nchannels ="
    )
    config.write_text(text)
    assert main(["evaluate", "--config", str(config), "--out", str(tmp_path / "x.csv")]) == 2
    line = _error_line(capsys)
    assert "does not fit" in line and "size mismatch" in line


def test_class_count_mismatch(tmp_path: Path, capsys, sample_config, make_image_folder) -> None:
    make_image_folder({"cat": 1, "dog": 1}, root=tmp_path / "pets", mode="L")
    extra = '[[datasets]]\nname = "pets"\nroot = "pets"'
    config = project_config(tmp_path, sample_config, extra)
    args = ["evaluate", "--config", str(config), "--out", str(tmp_path / "x.csv")]
    assert main([*args, "--dataset", "pets"]) == 2
    line = _error_line(capsys)
    assert "10 classes" in line and "has 2" in line


def test_no_cache_and_unreadable_files(
    tmp_path: Path, capsys, sample_config, digits_subset
) -> None:
    small = digits_subset(per_class=1, name="small")
    (small / "8" / "broken.png").write_bytes(b"garbage")
    extra = f'[[datasets]]\nname = "small"\nroot = "{small.as_posix()}"'
    config = project_config(tmp_path, sample_config, extra)
    out = tmp_path / "small.csv"
    code = main(
        [
            "evaluate",
            "--config",
            str(config),
            "--out",
            str(out),
            "--dataset",
            "small",
            "--no-cache",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert "images: 10   skipped: 1" in stdout
    assert "8/broken.png" in stdout
    assert len(pd.read_csv(out)) == 10
    assert not (tmp_path / "cache").exists()


def test_every_file_unreadable_still_reports(tmp_path: Path, capsys, sample_config) -> None:
    for digit in range(10):
        (tmp_path / "bad" / str(digit)).mkdir(parents=True)
    (tmp_path / "bad" / "1" / "x.png").write_bytes(b"garbage")
    config = project_config(tmp_path, sample_config, '[[datasets]]\nname = "bad"\nroot = "bad"')
    out = tmp_path / "bad.csv"
    code = main(
        [
            "evaluate",
            "--config",
            str(config),
            "--out",
            str(out),
            "--dataset",
            "bad",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert "images: 0   skipped: 1" in stdout
    assert printed_matrix(stdout).to_numpy().sum() == 0
    assert len(pd.read_csv(out)) == 0


# --- result folders, resuming a killed run, many classes -----------------------------------

SLOW_MODEL = '''
import time

from torch import nn


class Slow(nn.Module):
    """A tiny CNN that takes its time, so a test can kill an evaluation half-way."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        time.sleep(0.05)
        return self.head(self.features(x).mean(dim=(2, 3)))


def build(num_classes: int = 10) -> nn.Module:
    return Slow(num_classes)
'''


def slow_project(folder: Path, sample_config) -> Path:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    (folder / "slow_model.py").write_text(SLOW_MODEL, encoding="utf-8")
    sys.path.insert(0, str(folder))
    try:
        import slow_model  # type: ignore[import-not-found]

        save_file(slow_model.build(10).state_dict(), str(folder / "slow.safetensors"))
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("slow_model", None)
    root = sample_config.dataset("digits-test").root
    config = folder / "config.toml"
    config.write_text(
        f"""
[[models]]
name = "slow"
factory = "slow_model:build"
weights = "slow.safetensors"
input_size = [32, 32]
channels = 1
mean = [0.5]
std = [0.5]

[[datasets]]
name = "digits"
root = "{root.as_posix()}"
""",
        encoding="utf-8",
    )
    return config


def test_a_killed_evaluation_resumes_and_equals_an_uninterrupted_one(
    tmp_path: Path, sample_config
) -> None:
    """SIGKILL (as an OOM kill or a lost machine) half-way; the rerun computes only what is
    missing and gives exactly the uninterrupted result."""
    import signal

    from core.results import open_results

    config = slow_project(tmp_path, sample_config)
    args = ["--config", str(config), "--batch-size", "16", "--commit-every", "0", "--no-maps"]
    whole = run_cli("evaluate", *args, "--out", str(tmp_path / "whole/"))
    assert whole.returncode == 0, whole.stderr
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "core", "evaluate", *args, "--out", f"{killed_dir}/"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        progress = ""
        while not re.search(r"predicting: (1[6-9]\d|[2-4]\d\d)/540", progress):
            char = process.stderr.read(1)
            assert char, f"ended before it could be killed: {progress}"
            progress += char
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    committed = (killed_dir / "done.log").read_text().split()
    assert 0 < len(committed) // 2 < 540 // 16  # part of the set was saved, not all
    resumed = run_cli("evaluate", *args, "--out", f"{killed_dir}/")
    assert resumed.returncode == 0, resumed.stderr
    first_progress = int(re.findall(r"predicting: (\d+)/540", resumed.stderr)[0])
    assert first_progress > 16  # it did not start from the beginning
    a, b = open_results(tmp_path / "whole"), open_results(killed_dir)
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    np.testing.assert_array_equal(a.probs(a.index), b.probs(b.index))
    assert "wrote the result folder" in resumed.stdout


def test_report_at_many_classes_lists_pairs_not_the_matrix(tmp_path: Path, capsys) -> None:
    """At 1,000 classes the CLI prints the most confused pairs and lowest recalls, readably."""
    import torch

    from core.cli import _report
    from core.results import ResultWriter
    from core.results.scores import scores_from_logits

    k, n = 1000, 3000
    rng = np.random.default_rng(0)
    labels = rng.integers(0, k, n)
    classes = [f"c{i:04d}" for i in range(k)]
    logits = torch.from_numpy(rng.normal(size=(n, k)).astype(np.float32))
    logits[np.arange(n), labels] += 6.0
    logits[:300, 7] += 20.0  # 300 images predicted c0007: the top confusions
    manifest = [(f"{classes[y]}/{i}.png", int(y)) for i, y in enumerate(labels)]
    with ResultWriter(tmp_path / "r", manifest, classes, "x") as writer:
        writer.write(scores_from_logits(np.arange(n), torch.from_numpy(labels), logits))
        result = writer.finish()
    _report(result)
    out = capsys.readouterr().out
    assert "confusion matrix" not in out
    assert len(out.splitlines()) < 60
    assert "images: 3,000" in out
    pairs = [line for line in out.splitlines() if "→ predicted" in line]
    assert len(pairs) == 20 and all("→ predicted c0007" in line for line in pairs)
