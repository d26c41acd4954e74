"""Scale: a 1,000,000-image × 1,000-class result, and an end-to-end run on generated images.

Part 1 synthesises a result folder through the store's own writer (no image files): 1M rows,
1,000 classes, float16 probabilities and 7×7 maps, then measures in a fresh process what the
dashboard does with it: open (time, memory), confusion matrix, one cell filtered and sorted, a
gallery page's rows with their probabilities and maps.

Part 2 generates a 1,000-class project of real PNG files (``tests/large_project.py``; 100 per
class = 100,000 by default) and runs ``python -m core evaluate`` on it twice: the first run
(time, peak memory) and the cached restart.

    python bench/scale.py [--rows 1000000] [--classes 1000] [--images-per-class 100] [--skip-e2e]
                          [--browser] [--browser-per-class 5]

Part 3 (``--browser``) starts a fresh server on a generated 1,000-class project whose result is
already on disk and measures, in headless Chromium, the first usable page (matrix drawn), the
browser's memory (proportional set size of all its processes, and the page's JS heap) and
click → complete gallery page on cells of the default view, then three next visitors (fresh
browser contexts on the same server). As the floor, it times a bare Streamlit page the same way
(``bench/reference_app.py``: a title and a small Vega-Lite chart, as the matrix is drawn; and
the same page with a small Plotly chart, for comparison) in the same run.

Every figure is printed next to its target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def synthesise(
    folder: Path,
    rows: int,
    classes: int,
    chunk: int = 50_000,
    manifest: list[tuple[str, int]] | None = None,
    key: str = "bench",
) -> None:
    """A result folder of ``rows`` images written batch by batch through ResultWriter."""
    import numpy as np
    import torch

    from core.results import ResultWriter
    from core.results.scores import scores_from_logits

    rng = np.random.default_rng(0)
    names = [f"c{i:04d}" for i in range(classes)]
    if manifest is None:
        manifest = [(f"{names[i % classes]}/{i:07d}.png", i % classes) for i in range(rows)]
    labels = np.array([label for _, label in manifest])
    with ResultWriter(folder, manifest, names, key, map_shape=(7, 7)) as writer:
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            y = torch.from_numpy(labels[start:stop])
            logits = torch.from_numpy(rng.standard_normal((stop - start, classes), np.float32))
            logits[torch.arange(stop - start), y] += 3.0  # about 60% right
            maps = torch.from_numpy(rng.standard_normal((stop - start, 2, 7, 7), np.float32))
            writer.write(scores_from_logits(np.arange(start, stop), y, logits, maps))
        writer.finish()


MEASURE = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
t = time.perf_counter()
from core.results import open_results
from core.analysis.metrics import cell_rows, confusion_matrix
from core.analysis.gallery import page_rows, sort_rows, stored_maps
import_s = time.perf_counter() - t
def hwm():  # this process's peak RSS in MB (ru_maxrss would include the parent's, from fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
rss0 = hwm()
out = {"import_s": import_s}
t = time.perf_counter(); result = open_results(sys.argv[1]); table = result.predictions
out["open_s"] = time.perf_counter() - t
out["open_mb"] = hwm() - rss0
times = []
for _ in range(5):
    t = time.perf_counter()
    m = confusion_matrix(table, result.num_classes)
    times.append(time.perf_counter() - t)
out["matrix_s"] = sorted(times)[2]
true, pred = 7, 7  # a diagonal cell: the largest cells are on the diagonal
times = []
for _ in range(5):
    t = time.perf_counter()
    rows = sort_rows(cell_rows(table, true, pred), "loss", False)
    times.append(time.perf_counter() - t)
out["cell_s"] = sorted(times)[2]; out["cell_rows"] = len(rows)
times = []
for page in (1, 2, 3, 4, 5):
    t = time.perf_counter()
    shown = page_rows(rows, page, 24)
    probs = result.probs(shown["index"].to_numpy())
    maps = stored_maps(result, shown, (224, 224))
    times.append(time.perf_counter() - t)
out["page_s"] = sorted(times)[2]
out["total_mb"] = hwm()
print(json.dumps(out))
"""


def measure(folder: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(folder), str(REPO)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


WRAPPED = (
    "import resource, runpy, sys\n"
    "sys.argv = ['core', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('core', run_name='__main__')\n"
    "finally:\n"
    "    status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
    "    peak = int(status.split()[0])  # not ru_maxrss: that counts the forking parent too\n"
    "    print(f'PEAK_KB {peak}', file=sys.stderr)\n"
)


def run_cli(config: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one ``python -m core evaluate`` in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", WRAPPED, "evaluate", "--config", str(config), "--out", f"{out}/"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    peak_kb = int(done.stderr.rsplit("PEAK_KB ", 1)[1].split()[0])
    return seconds, peak_kb / 1024


def chromium_pss_mb() -> float:
    """Proportional set size of every Chromium process (shared pages counted once, split)."""
    total = 0
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or "chrom" not in (proc / "comm").read_text():
                continue
            for line in (proc / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def browser_part(classes: int, per_class: int) -> None:
    import statistics

    from core import evaluate, load_config, load_model, most_confused_classes, open_dataset
    from core.analysis.metrics import confusion_matrix
    from tests.browser import (
        chromium,
        click_cell,
        new_page,
        streamlit_server,
        wait_for_gallery,
        wait_for_matrix,
    )
    from tests.large_project import make_large_project

    config_path = make_large_project(classes, per_class)
    config = load_config(config_path)
    model = load_model(config.model())
    result = evaluate(model, open_dataset(config.dataset(), model.spec.classes), config.cache_dir)
    counts = confusion_matrix(result.predictions, result.num_classes)
    shown = most_confused_classes(result.predictions, result.num_classes, 20)
    cells = [(t, p) for t in shown for p in shown if counts[t, p] and t != p][:12]
    clicks = []
    with streamlit_server("--config", str(config_path)) as url, chromium() as browser:
        page = new_page(browser)
        start = time.perf_counter()
        page.goto(url)
        wait_for_matrix(page)
        page.get_by_text(f"The 20 most confused of {classes:,} classes").wait_for()
        first_s = time.perf_counter() - start
        time.sleep(2)
        heap = page.evaluate("() => performance.memory.usedJSHeapSize") / 2**20
        pss = chromium_pss_mb()
        for true, pred in cells:
            start = time.perf_counter()
            click_cell(page, shown.index(true), shown.index(pred))
            wait_for_gallery(page, result.classes[true], result.classes[pred])
            clicks.append(time.perf_counter() - start)
        pss_after = chromium_pss_mb()
        # other people opening the URL: the server has the result
        heading = f"The 20 most confused of {classes:,} classes"
        seconds = [page_load(browser, url, heading) for _ in range(VISITS)]
        returning = returning_loads(browser, url, heading)
    # The floor: a bare Streamlit page (a title and a small Vega-Lite chart; then the same with
    # a Plotly chart), timed the same way.
    with streamlit_server(app=REPO / "bench" / "reference_app.py") as url, chromium() as browser:
        reference = [page_load(browser, url, "Reference page") for _ in range(VISITS + 1)]
        reference_returning = returning_loads(browser, url, "Reference page")
        plotly = [
            page_load(browser, f"{url}/?plotly=1", "Reference page", plotly=True)
            for _ in range(VISITS + 1)
        ]
    n = classes * per_class
    print(f"\n## dashboard in Chromium: {classes:,} classes, {n:,} images, result on disk\n")
    print("| step | ours | target |\n|---|---:|---|")
    row("fresh server, first visitor: open the page → matrix drawn", f"{first_s:.1f} s", "-")
    row(
        f"next visitor (the server has the result), median of {VISITS}",
        f"{statistics.median(seconds):.1f} s ({', '.join(f'{s:.1f}' for s in seconds)})",
        "≤ 3 s",
    )
    row(
        "reference: bare page (title + small Vega-Lite chart), fresh server, first visitor",
        f"{reference[0]:.1f} s",
        "-",
    )
    row(
        f"reference: next visitor, median of {VISITS}",
        f"{statistics.median(reference[1:]):.1f} s "
        f"({', '.join(f'{s:.1f}' for s in reference[1:])})",
        "floor",
    )
    row(
        f"reference with a small Plotly chart instead: next visitor, median of {VISITS}",
        f"{statistics.median(plotly[1:]):.1f} s ({', '.join(f'{s:.1f}' for s in plotly[1:])})",
        "-",
    )
    row(
        f"next visitor, returning browser (its cache warm), median of {VISITS}",
        f"{statistics.median(returning):.1f} s ({', '.join(f'{s:.1f}' for s in returning)})",
        "≤ 3 s",
    )
    row(
        f"reference: next visitor, returning browser, median of {VISITS}",
        f"{statistics.median(reference_returning):.1f} s "
        f"({', '.join(f'{s:.1f}' for s in reference_returning)})",
        "floor",
    )
    row("Chromium memory after the first page (PSS, all processes)", f"{pss:,.0f} MB", "≤ 600 MB")
    row("page JS heap", f"{heap:,.0f} MB", "-")
    row(
        f"click → complete gallery, {len(clicks)} cells (p50, max)",
        f"{statistics.median(clicks):.2f} s, {max(clicks):.2f} s",
        "p50 ≤ 1 s",
    )
    row("Chromium memory after the clicks", f"{pss_after:,.0f} MB", "≤ 600 MB")


VISITS = 3  # next visitors timed per page (each a fresh browser context: nothing cached)


def page_load(browser, url: str, text: str, context=None, plotly: bool = False) -> float:  # type: ignore[no-untyped-def]
    """Seconds from opening ``url`` to its chart drawn and ``text`` shown: in a fresh context
    (a new browser profile: nothing cached), or in a new tab of ``context`` (a new session in
    a browser that has its cache). ``plotly``: the chart is a Plotly one."""
    from tests.browser import new_page, wait_for_matrix

    page = new_page(browser) if context is None else context.new_page()
    start = time.perf_counter()
    page.goto(url)
    if plotly:
        page.wait_for_selector(".js-plotly-plot .main-svg")
    else:
        wait_for_matrix(page)
    page.get_by_text(text).wait_for()
    seconds = time.perf_counter() - start
    (page.context if context is None else page).close()
    return seconds


def returning_loads(browser, url: str, text: str) -> list[float]:  # type: ignore[no-untyped-def]
    """:data:`VISITS` page loads in new tabs of one browser profile, after a first (untimed)
    visit filled its cache: someone opening the URL again, each tab its own session."""
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    try:
        page_load(browser, url, text, context)
        return [page_load(browser, url, text, context) for _ in range(VISITS)]
    finally:
        context.close()


def row(name: str, ours: str, target: str) -> None:
    print(f"| {name} | {ours} | {target} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--images-per-class", type=int, default=100)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-store", action="store_true", help="skip the 1M synthetic store")
    parser.add_argument("--browser", action="store_true", help="also measure the dashboard")
    parser.add_argument("--browser-per-class", type=int, default=5)
    parser.add_argument("--hit", action="store_true", help="reopen stored results of --rows files")
    parser.add_argument("--runs", type=int, default=3, help="runs of the reopening (--hit)")
    args = parser.parse_args()
    print(f"# bench/scale.py on {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    if args.browser:
        browser_part(args.classes, args.browser_per_class)
    if not args.skip_store:
        store_part(args)
    if not args.skip_e2e:
        e2e_part(args)
    if args.hit:
        hit_part(args)


def store_part(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=REPO / ".cache") as tmp:
        folder = Path(tmp) / "result"
        start = time.perf_counter()
        synthesise(folder, args.rows, args.classes)
        write_s = time.perf_counter() - start
        size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        probs_b = (folder / "probs.npy").stat().st_size / args.rows
        maps_b = (folder / "maps.npy").stat().st_size / args.rows
        m = measure(folder)
    print(
        f"\n## {args.rows:,} rows × {args.classes:,} classes (synthesised through ResultWriter)\n"
    )
    print("| step | ours | target |\n|---|---:|---|")
    row("write the store (writer only)", f"{write_s:.1f} s, {size:,.0f} MB on disk", "-")
    row("probabilities per image", f"{probs_b:,.0f} B (float16)", "compact")
    row("maps per image (2 × 7×7)", f"{maps_b:,.0f} B (float16)", "≤ 300 B")
    row("open (memory-mapped) + table", f"{m['open_s']:.2f} s, +{m['open_mb']:,.0f} MB", "≤ 3 s")
    row("confusion matrix", f"{m['matrix_s'] * 1000:.0f} ms", "≤ 500 ms")
    row(f"one cell ({m['cell_rows']:,} rows) filtered + sorted", f"{m['cell_s'] * 1000:.0f} ms",
        "≤ 300 ms")  # fmt: skip
    row("a gallery page: 24 rows, probs, maps at 224²", f"{m['page_s'] * 1000:.0f} ms", "-")
    row("process peak RSS after all of it", f"{m['total_mb']:,.0f} MB", "-")


def e2e_part(args: argparse.Namespace) -> None:
    from tests.large_project import make_large_project

    start = time.perf_counter()
    config = make_large_project(args.classes, args.images_per_class)
    gen_s = time.perf_counter() - start
    n = args.classes * args.images_per_class
    with tempfile.TemporaryDirectory(dir=REPO / ".cache") as tmp:
        first_s, first_mb = run_cli(config, Path(tmp) / "r")
        second_s, _ = run_cli(config, Path(tmp) / "r")
    print(f"\n## end to end: {n:,} generated 32×32 PNGs, {args.classes:,} classes\n")
    print("| step | ours | target |\n|---|---:|---|")
    row("generate the images (cached after the first time)", f"{gen_s:.1f} s", "-")
    row("`evaluate` first run (predictions + maps)", f"{first_s:.1f} s ({n / first_s:,.0f} img/s)",
        "-")  # fmt: skip
    row("peak memory of that process", f"{first_mb:,.0f} MB", "≤ 2 GB above the model")
    row("`evaluate` again (cache hit)", f"{second_s:.1f} s", "≤ 3 s at 1M")


def hit_files(rows: int, classes: int) -> Path:
    """A config whose dataset is ``rows`` files in ``classes`` folders, with the generated
    project's model. The files are empty (a reopening never decodes one), made once."""
    import shutil

    folder = REPO / ".cache" / "generated" / f"hit-{rows}x{classes}"
    if (folder / "complete").is_file():
        return folder / "config.toml"
    from tests.large_project import make_large_project

    model = make_large_project(classes, 5).parent
    images = folder / "images"
    for c in range(classes):
        (images / f"c{c:04d}").mkdir(parents=True, exist_ok=True)
    for name in ("matcher.py", "matcher.safetensors", "config.toml"):
        shutil.copy2(model / name, folder / name)
    for i in range(rows):
        os.close(os.open(images / f"c{i % classes:04d}" / f"{i:07d}.png", os.O_CREAT | os.O_WRONLY))
    (folder / "complete").touch()
    return folder / "config.toml"


def hit_part(args: argparse.Namespace) -> None:
    """``python -m core evaluate`` on unchanged inputs: the stored results are reopened."""
    from core.config import load_config
    from core.data.datasets import open_dataset
    from core.results import StoreError, open_results
    from core.results.key import evaluation_key

    start = time.perf_counter()
    config_path = hit_files(args.rows, args.classes)
    make_s = time.perf_counter() - start
    config = load_config(config_path)
    spec = config.model()
    dataset = open_dataset(config.dataset(), spec.classes)
    key = evaluation_key(spec, dataset)
    folder = config.cache_dir / "results" / key
    try:
        ready = open_results(folder).fingerprint == key
    except StoreError:
        ready = False
    start = time.perf_counter()
    if not ready:
        synthesise(folder, len(dataset), args.classes, manifest=dataset.samples, key=key)
    store_s = time.perf_counter() - start
    images = config_path.parent / "images"
    start = time.perf_counter()
    listed = subprocess.run(
        ["find", str(images), "-type", "f", "-printf", "%s %T@ %p\\n"],
        capture_output=True,
        check=True,
    ).stdout.count(b"\n")
    find_s = time.perf_counter() - start
    runs = []
    for _ in range(args.runs):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", WRAPPED, "evaluate", "--config", str(config_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        runs.append(time.perf_counter() - start)
        if done.returncode != 0 or "stored results" not in done.stderr:
            raise SystemExit(f"not a reopening:\n{done.stderr[-2000:]}")
    n = len(dataset)
    print(f"\n## reopening: `evaluate` again on {n:,} unchanged files, {args.classes:,} classes\n")
    print("| step | ours | target |\n|---|---:|---|")
    row("make the files (empty; cached) / the store (synthesised; cached)",
        f"{make_s:.1f} s / {store_s:.1f} s", "-")  # fmt: skip
    row("`evaluate` on unchanged inputs, every run", " / ".join(f"{s:.2f} s" for s in runs),
        "≤ 3 s at 1M")  # fmt: skip
    row(f"reference: `find -printf` size + mtime of the {listed:,} files (C, one core)",
        f"{find_s:.2f} s", "-")  # fmt: skip


if __name__ == "__main__":
    main()
