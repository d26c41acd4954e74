"""A shared server's bad days, really produced: a full disk, a read-only cache, files deleted,
cut short or copied over under a running server, and ``kill -9`` of ``streamlit run``.

Faults are real file systems: a small tmpfs filled up, or one mounted (or remounted)
read-only; so these tests need root (CI runs as root: there they are never skipped). Each
checks the message (one line, in the user's terms), the page (no exception element) and that
nothing is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import evaluate, load_config, load_model, open_dataset
from core.analysis.label_quality import result_label_quality
from core.notes import NotesError, NotesStore
from core.results import DiskFullError, StoreError, StoreWriteError, open_results
from core.results.evaluate import lookup
from tests.browser import ROOT, chromium, free_port, new_page, screenshot, wait_for_matrix

SAMPLE = ROOT / "sample_models"
PAGES = ["analysis.py", "labels.py", "compare.py", "notes.py"]
VIEWS = ROOT / "dashboard" / "views"
MODEL, COPY, DATA = "digits-cnn", "digits-cnn (shifted)", "digits-test"

if os.geteuid() != 0:
    if os.environ.get("CI"):
        raise RuntimeError("the fault tests mount file systems: CI must run them as root")
    pytest.skip("mounting a tmpfs needs root (CI runs these as root)", allow_module_level=True)


# ------------------------------------------------------------------------------ the faults


@contextmanager
def tmpfs(folder: Path, size: str = "3m", read_only: bool = False) -> Iterator[Path]:
    """A small file system mounted on ``folder`` (unmounted afterwards, whatever happens)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], check=False).returncode:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system holding ``folder`` until ``leave`` bytes are free (about)."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            stats = os.statvfs(folder)
            free = stats.f_bavail * stats.f_frsize
            if free <= leave:
                break
            os.write(fd, b"\0" * min(free - leave, 1 << 20))
    except OSError:  # full
        pass
    finally:
        os.close(fd)
    return filler


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def sample_project(folder: Path, cache: Path, notes_db: Path | None = None) -> Path:
    """The bundled sample's digits part, copied, with ``cache_dir`` on ``cache``, and a second
    entry of the same model with another input mean (for ``compare``)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(SAMPLE / "digits", folder / "digits")
    shutil.copy(SAMPLE / "digits_model.py", folder / "digits_model.py")
    notes = f'notes_db = "{notes_db.as_posix()}"\n' if notes_db is not None else ""
    entry = """
[[models]]
name = "{name}"
factory = "digits_model:build"
weights = "digits/weights.safetensors"
input_size = [32, 32]
channels = 1
mean = [{mean}]
std = [0.5]
datasets = ["digits-test"]
"""
    head = (
        f'cache_dir = "{cache.as_posix()}"\n{notes}'
        + entry.format(name=MODEL, mean=0.5)
        + entry.format(name=COPY, mean=0.6)
        + '\n[[datasets]]\nname = "digits-test"\nroot = "digits/test"\n'
    )
    path = folder / "config.toml"
    path.write_text(head)
    return path


def run_evaluation(config_path: Path, model: str = MODEL, **kwargs):  # type: ignore[no-untyped-def]
    config = load_config(config_path)
    loaded = load_model(config.model(model))
    data = open_dataset(config.dataset(DATA), loaded.spec.classes)
    return evaluate(loaded, data, config.cache_dir, **kwargs)


def one_line(message: str, *parts: str) -> None:
    assert "\n" not in message and "Traceback" not in message
    for part in parts:
        assert part in message, (part, message)


# ------------------------------------------------------------------------------ full disk


def test_a_full_disk_is_refused_before_writing_then_works_once_freed(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "cache") as cache:
        config = sample_project(tmp_path / "project", cache)
        filler = fill(cache, leave=20_000)
        with pytest.raises(DiskFullError) as refused:
            run_evaluation(config)
        message = str(refused.value)
        one_line(message, f"The disk holding {cache}/results/", "is full", "needs", "is free")
        assert "cache_dir" in message
        needed = float(message.split("needs ")[1].split(" kB")[0]) * 1000
        assert needed > 20_000 > free_bytes(cache) - 4096  # the numbers are the real ones
        assert not list(cache.glob("results/*/result.json"))  # nothing half-written
        filler.unlink()
        result = run_evaluation(config)
        assert len(result.predictions) == 540 and result.folder.parent == cache / "results"


def test_a_disk_filling_up_mid_write_stops_cleanly_and_the_rerun_resumes(tmp_path: Path) -> None:
    reference = run_evaluation(sample_project(tmp_path / "ref", tmp_path / "ref-cache"))
    with tmpfs(tmp_path / "cache") as cache:
        config = sample_project(tmp_path / "project", cache)
        filled: list[Path] = []

        def other_process_fills_the_disk(done: int, total: int) -> None:
            if done >= 128 and not filled:
                filled.append(fill(cache))

        with pytest.raises(DiskFullError) as stopped:
            run_evaluation(
                config, progress=other_process_fills_the_disk, batch_size=64, commit_seconds=0
            )
        one_line(str(stopped.value), "filled up while the result was written", "is free")
        one_line(str(stopped.value), "continues from the last saved batch")
        folder = next((cache / "results").iterdir())
        saved = (folder / "done.log").read_text().splitlines()
        assert saved and not json.loads((folder / "result.json").read_text())["complete"]
        filled[0].unlink()  # space is freed
        first: list[int] = []
        result = run_evaluation(
            config, progress=lambda d, t: first.append(d) if not first else None, batch_size=64
        )
        assert first[0] > 64  # resumed: the rows saved before are not predicted again
        assert (folder / "done.log").read_text().splitlines()[: len(saved)] == saved
        np.testing.assert_array_equal(result.pred, reference.pred)
        np.testing.assert_array_equal(result.probs(result.index), reference.probs(result.index))
        np.testing.assert_array_equal(result.maps(result.index), reference.maps(reference.index))


# ------------------------------------------------------------------------------ read-only


def test_a_read_only_cache_opens_stored_results_and_says_what_cannot_be_written(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "cache", size="20m") as cache:
        config_path = sample_project(tmp_path / "project", cache)
        stored = run_evaluation(config_path)
        remount(cache, "ro")
        config = load_config(config_path)
        data = open_dataset(config.dataset(DATA))
        found = lookup(config.model(MODEL), data, config.cache_dir)
        assert found.result is not None and len(found.result.predictions) == 540
        np.testing.assert_array_equal(found.result.pred, stored.pred)
        quality = result_label_quality(found.result)  # computed, kept in memory
        assert len(quality) == 540
        one_line(quality.unsaved, f"{stored.folder}/derived", "read-only")
        with pytest.raises(StoreWriteError) as refused:
            run_evaluation(config_path, model=COPY)
        one_line(str(refused.value), f"{cache}/results/", "read-only", "cache_dir", "--out")


def test_a_result_folder_cut_short_is_never_read_past_its_end(tmp_path: Path) -> None:
    """In a child process: a SIGBUS there would be a negative exit code, not an exception."""
    stored = run_evaluation(sample_project(tmp_path / "project", tmp_path / "cache"))
    script = f"""
import os, sys
from core.results import StoreError, open_results
result = open_results({str(stored.folder)!r})
probs = result.folder / "probs.npy"
os.truncate(probs, 128)  # cut short in place, under the open map
assert result.changed_on_disk()
try:
    result.probs([539])
except StoreError as exc:
    print("refused:", exc)
    sys.exit(0)
sys.exit(3)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert "changed on disk while it was open" in done.stdout
    with pytest.raises(StoreError, match="damaged"):
        open_results(stored.folder)


# ------------------------------------------------------------------------------ notes


NOTES_APP = """
import os
import streamlit as st
from core.notes import NotesStore
from dashboard.parts.notes import editor
st.session_state.setdefault("author", "ana")
store = st.cache_resource(NotesStore)(os.environ["FAULT_NOTES_DB"])  # one per server
editor(store, "digits", "3/img_001.png")
"""


def notes_app(path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("FAULT_NOTES_DB", str(path))
    return AppTest.from_string(NOTES_APP, default_timeout=60).run()


def test_a_note_typed_on_a_full_disk_is_kept_and_saved_on_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tmpfs(tmp_path / "notes", size="1m") as folder:
        db = folder / "notes.sqlite"
        NotesStore(db).add_note("digits", "3/img_001.png", "bob", "an earlier note")
        at = notes_app(db, monkeypatch)  # the server is up, then the disk fills
        filler = fill(folder)
        at.run()
        assert [t.value for t in at.text] == ["an earlier note"]  # still readable
        at.text_area[0].input("the 3 looks like an 8")
        at.button[0].click().run()  # "Save note"
        assert not at.exception
        errors = " ".join(e.value for e in at.error)
        one_line(errors, f"The disk holding {folder} is full", "nothing was saved", "kept")
        assert "Move it aside" not in errors and "unusable" not in errors
        assert at.text_area[0].value == "the 3 looks like an 8"  # the typed text is kept
        assert [b.label for b in at.button][-1] == "Retry saving the note"
        filler.unlink()
        at.button[-1].click().run()
        assert not at.exception and not at.error
        assert at.text_area[0].value == ""
        notes = [n.text for n in NotesStore(db).notes("digits", "3/img_001.png")]
        assert notes == ["an earlier note", "the 3 looks like an 8"]


def test_notes_on_a_read_only_folder_are_read_only_with_the_right_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tmpfs(tmp_path / "notes", size="1m") as folder:
        NotesStore(folder / "notes.sqlite").add_note("digits", "3/img_001.png", "bob", "kept")
        remount(folder, "ro")
        for db, action in (
            (folder / "notes.sqlite", "written"),
            (folder / "new.sqlite", "created"),
        ):
            store = NotesStore(db)
            assert store.read_only
            one_line(store.read_only_reason, f"{db} cannot be {action}", "read-only", "notes_db")
            at = notes_app(db, monkeypatch)
            assert not at.exception
            assert any("read-only file system" in i.value for i in at.info)
            assert not at.text_area  # nothing to type that could not be saved
            with pytest.raises(NotesError, match="read-only"):
                store.add_note("digits", "3/img_001.png", "ana", "x")
        assert [n.text for n in NotesStore(folder / "notes.sqlite").notes(
            "digits", "3/img_001.png"
        )] == ["kept"]  # fmt: skip
        remount(folder, "rw")  # the fault is gone: the same store writes again
        time.sleep(1.1)
        assert not store.read_only
        store.add_note("digits", "3/img_001.png", "ana", "back")


# ------------------------------------------------------------------------------ every command


FAULTS = ["full", "read-only, empty", "read-only, with results"]


@contextmanager
def faulty_cache(tmp_path: Path, fault: str) -> Iterator[tuple[Path, Path]]:
    """(config, cache) with the cache on a file system in the state ``fault``."""
    cache = tmp_path / "cache"
    if fault == "read-only, empty":
        with tmpfs(cache, read_only=True):
            yield sample_project(tmp_path / "project", cache), cache
        return
    with tmpfs(cache, size="20m" if "results" in fault else "3m"):
        config = sample_project(tmp_path / "project", cache)
        if fault == "full":
            fill(cache, leave=20_000)
        else:
            for model in (MODEL, COPY):
                run_evaluation(config, model=model)
            remount(cache, "ro")
        yield config, cache


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("fault", FAULTS)
def test_every_command_under_each_fault_says_what_and_never_shows_a_traceback(
    tmp_path: Path, fault: str
) -> None:
    with faulty_cache(tmp_path, fault) as (config, cache):
        c = str(config)
        runs = {
            "evaluate": cli("evaluate", "--config", c),
            "evaluate --out DIR/": cli("evaluate", "--config", c, "--out", f"{cache}/out/"),
            "evaluate --out .csv": cli("evaluate", "--config", c, "--out", f"{cache}/x.csv"),
            "label-issues": cli("label-issues", "--config", c),
            "compare": cli("compare", "--config", c, "--model", MODEL, "--model", COPY),
        }
    for name, done in runs.items():
        assert "Traceback" not in done.stderr, (name, done.stderr)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        if fault == "read-only, with results" and name in ("evaluate", "label-issues", "compare"):
            assert done.returncode == 0, (name, done.stderr)  # stored results open
            continue
        assert done.returncode == 2 and len(errors) == 1, (name, done.stderr)
        expected = "is full" if fault == "full" else "read-only"
        one_line(errors[0], str(cache), expected)
    if fault == "read-only, with results":
        notes = runs["label-issues"].stderr
        assert "not saved" in notes and "read-only" in notes
        assert "suspected of a wrong label" in runs["label-issues"].stdout


@pytest.mark.parametrize("fault", FAULTS)
def test_no_page_shows_an_exception_under_each_fault(
    tmp_path: Path, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with faulty_cache(tmp_path, fault) as (config, cache):
        monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(config))
        shown: dict[str, AppTest] = {}
        for page in PAGES:
            at = AppTest.from_file(str(VIEWS / page), default_timeout=180)
            at.query_params["model"] = MODEL
            if page == "compare.py":
                at.query_params["model_b"] = COPY
            shown[page] = at.run()
            assert not at.exception, (page, [e.value for e in at.exception])
        errors = " ".join(e.value for e in shown["analysis.py"].error)
        if fault == "read-only, with results":
            assert not errors  # stored results open
            captions = " ".join(c.value for c in shown["labels.py"].caption)
            assert "Kept in memory while the server runs" in captions
        else:
            assert "cannot be saved" in errors and str(cache) in errors
            assert ("is full" if fault == "full" else "read-only") in errors


# ------------------------------------------------------------------------------ files changing


def test_a_result_folder_deleted_or_cut_short_under_a_live_server_is_recomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sample_project(tmp_path / "project", tmp_path / "cache")
    stored = run_evaluation(config)
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(config))
    at = AppTest.from_file(str(VIEWS / "analysis.py"), default_timeout=180).run()
    assert not at.exception and not at.error
    for damage in ("delete", "cut short"):
        if damage == "delete":
            shutil.rmtree(tmp_path / "cache" / "results")
        else:
            os.truncate(stored.folder / "probs.npy", 128)  # in place, under the open map
        at.run()
        assert not at.exception and not at.error, damage
        reopened = open_results(stored.folder)  # recomputed, complete again
        np.testing.assert_array_equal(reopened.pred, stored.pred)
        assert any("540 images" in c.value for c in at.caption)


def test_a_checkpoint_copied_over_shows_the_model_error_then_the_complete_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sample_project(tmp_path / "project", tmp_path / "cache")
    weights = tmp_path / "project" / "digits" / "weights.safetensors"
    complete = weights.read_bytes()
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(config))
    at = AppTest.from_file(str(VIEWS / "analysis.py"), default_timeout=180).run()
    assert not at.exception and not at.error
    with weights.open("r+b") as handle:  # a copy half-way: the file is cut short in place
        handle.truncate(len(complete) // 2)
    at.run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert f"Model '{MODEL}' could not be loaded" in errors
    weights.write_bytes(complete)  # the copy finishes
    at.run()
    assert not at.exception and not at.error
    assert any("540 images" in c.value for c in at.caption)


def test_kill_9_of_the_server_mid_evaluation_resumes_after_a_restart(tmp_path: Path) -> None:
    """A real ``streamlit run``, killed with SIGKILL while a first evaluation runs; a visit
    after the restart continues from the last committed batch (a slowed copy of the model)."""
    config = sample_project(tmp_path / "project", tmp_path / "cache")
    slow = tmp_path / "project" / "slow_model.py"
    slow.write_text(SLOW_MODEL)
    text = config.read_text().replace('"digits_model:build"', '"slow_model:build"', 1)
    text = text.replace('datasets = ["digits-test"]', 'datasets = ["digits-test"]\nbatch_size = 32')
    config.write_text(text)
    results = tmp_path / "cache" / "results"
    with chromium() as browser:
        port = free_port()
        server = start_server(config, port, tmp_path / "log1")
        try:
            page = new_page(browser)
            page.goto(f"http://127.0.0.1:{port}/")
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                logs = list(results.glob("*/done.log"))
                if logs and len(logs[0].read_text().splitlines()) >= 2:
                    break
                time.sleep(0.1)
            os.kill(server.pid, signal.SIGKILL)
            server.wait(30)
            page.context.close()
        finally:
            stop(server)
        folder = logs[0].parent
        before = logs[0].read_text().splitlines()
        assert not json.loads((folder / "result.json").read_text())["complete"]
        server = start_server(config, port, tmp_path / "log2")
        try:
            page = new_page(browser)
            page.goto(f"http://127.0.0.1:{port}/")
            wait_for_matrix(page, timeout=240_000)
            screenshot(page, "faults_resumed_after_kill_9")
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            page.context.close()
            stop(server)
    after = (folder / "done.log").read_text().splitlines()
    assert after[: len(before)] == before  # continued: the committed rows were kept
    redone = [tuple(map(int, line.split())) for line in after[len(before) :]]
    kept = {r for line in before for r in range(*map(int, line.split()))}
    assert redone and not any(set(range(a, b)) & kept for a, b in redone)
    assert len(open_results(folder).predictions) == 540


SLOW_MODEL = """
import time

from digits_model import build as _build


def build(num_classes=10):
    model = _build(num_classes)
    forward = model.forward

    def slowly(x):
        time.sleep(0.5)
        return forward(x)

    model.forward = slowly
    return model
"""


def start_server(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    home = log.with_suffix(".home")
    home.mkdir()
    command = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
        "--server.headless", "true", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none", "--", "--config", str(config),
    ]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(home)},
        )  # fmt: skip
    deadline = time.monotonic() + 60
    import urllib.request

    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.3)
    stop(server)
    raise RuntimeError(f"streamlit did not start: {log.read_text()}")


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def test_in_a_browser_a_full_disk_is_one_panel_and_the_other_model_still_works(
    tmp_path: Path,
) -> None:
    """The page as a person sees it: the model whose results cannot be saved shows one error
    panel (no exception element); another model with stored results opens as usual."""
    with tmpfs(tmp_path / "cache", size="20m") as cache:
        config = sample_project(tmp_path / "project", cache)
        run_evaluation(config, model=COPY)  # stored before the disk filled
        fill(cache, leave=20_000)
        port = free_port()
        server = start_server(config, port, tmp_path / "log")
        try:
            with chromium() as browser:
                page = new_page(browser)
                page.goto(f"http://127.0.0.1:{port}/?model={MODEL}")
                panel = page.get_by_text("cannot be saved")
                panel.wait_for(timeout=180_000)
                screenshot(page, "faults_full_disk_panel")
                text = page.inner_text("body")
                assert f"The disk holding {cache}/results/" in text and "is free" in text
                assert page.locator('[data-testid="stException"]').count() == 0
                page.goto(f"http://127.0.0.1:{port}/?model={quote(COPY)}")
                wait_for_matrix(page, timeout=180_000)
                assert page.locator('[data-testid="stException"]').count() == 0
                page.context.close()
        finally:
            stop(server)
