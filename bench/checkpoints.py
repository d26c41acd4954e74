"""The Compare page's N-checkpoint heatmap at scale: 5 candidates × 1,000 classes (+ overall).

Synthesises a baseline and five candidates over ``--rows`` images of ``--classes`` classes (each
candidate: the baseline with 2 % churn either way, and five classes of its own broken), checks
each against the baseline (:func:`core.analysis.regression.check_pairs`, not timed here:
``bench/check.py`` times the gate), then times what the page does per draw:

- the grid: :func:`core.analysis.checkpoints.checkpoints_of` (groups × candidates arrays);
- the figure: :func:`dashboard.parts.checkpoints.heatmap_figure` (one heatmap, the marks, the
  invisible click/hover grid), and its JSON as ``st.plotly_chart`` sends it
  (``plotly.io.to_json(..., validate=False)``);
- the browser's draw: ``Plotly.newPlot`` of that JSON in headless Chromium (the plotly.js the
  Plotly package ships), from ``JSON.parse`` to the promise resolving.

The reference, measured in the same run: the usual Plotly way to mark cells, a heatmap with an
annotation per cell (▼/▲ or blank; what ``figure_factory.create_annotated_heatmap`` built before
Plotly 7 dropped it), its JSON and its draw.

    python bench/checkpoints.py [--rows 200000] [--classes 1000] [--candidates 5] [--no-browser]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_S = 2.0


def gates(rows: int, classes: int, candidates: int):  # type: ignore[no-untyped-def]
    """The baseline's gate against each synthetic candidate, keyed by name."""
    from core.analysis.comparison import ModelResults, compare
    from core.analysis.regression import check_pairs

    rng = np.random.default_rng(0)
    labels = np.arange(rows) % classes
    names = tuple(f"c{i:04d}" for i in range(classes))
    right = rng.random(rows) < 0.7
    wrong = (labels + rng.integers(1, classes, rows)) % classes
    base = np.where(right, labels, wrong)
    ids = np.arange(rows)
    prob = np.full(rows, 0.5, np.float32)

    def model(name: str, pred: np.ndarray) -> ModelResults:
        return ModelResults(name, "bench", names, ids, labels, pred, prob)

    found = {}
    for k in range(candidates):
        flip = rng.random(rows) < 0.02
        broken = np.isin(labels, np.arange(5 * k, 5 * k + 5)) & right & (rng.random(rows) < 0.3)
        pred = np.where(flip | broken, np.where(right, wrong, labels), base)
        name = f"epoch-{k + 1:02d}"
        found[name] = check_pairs(compare(model("baseline", base), model(name, pred)))
    return found


def best_of(runs: int, step):  # type: ignore[no-untyped-def]
    """The fastest of ``runs`` calls of ``step`` (seconds) and its last result."""
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - start)
    return min(times), out


def reference_figure(grid):  # type: ignore[no-untyped-def]
    """The plain way (what ``figure_factory.create_annotated_heatmap`` did before Plotly 7
    dropped it): a heatmap with its own hover, and a layout annotation per cell (▼/▲ or blank)."""
    import plotly.graph_objects as go

    verdict = grid.values["verdict"]
    labels = [f"{k}:{n}" for k, n in zip(grid.groups["group"], grid.groups["name"], strict=True)]
    text = {"regression": "▼", "improvement": "▲", "": ""}
    annotations = [
        {"x": model, "y": label, "text": text[verdict[r, c]], "showarrow": False}
        for r, label in enumerate(labels)
        for c, model in enumerate(grid.candidates)
    ]
    return go.Figure(
        go.Heatmap(
            z=grid.values["change"] * 100,
            x=grid.candidates,
            y=labels,
            colorscale="RdBu",
            zmid=0,
            customdata=np.stack([grid.values["n"], grid.values["p"]], -1),
            hovertemplate="%{y} %{x}: %{z:.2f} points, n %{customdata[0]}, p %{customdata[1]:.3g}",
        ),
        layout={"annotations": annotations, "height": 900},
    )


DRAW = """async (spec) => {
    const div = document.getElementById('plot');
    Plotly.purge(div);
    const start = performance.now();
    const fig = JSON.parse(spec);
    await Plotly.newPlot(div, fig.data, fig.layout, {displayModeBar: false});
    return (performance.now() - start) / 1000;
}"""


def browser_draws(specs: dict[str, str], runs: int) -> dict[str, float]:
    """Seconds for Chromium to parse and draw each figure's JSON (best of ``runs``)."""
    import plotly
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    script = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    home = tempfile.mkdtemp(prefix="bench-chromium-")
    env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": home, "XDG_CACHE_HOME": home}
    out = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=env
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_content('<div id="plot" style="width:1200px"></div>')
        page.add_script_tag(path=str(script))
        for name, spec in specs.items():
            out[name] = min(page.evaluate(DRAW, spec) for _ in range(runs))
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium draw")
    args = parser.parse_args()

    import plotly.io

    from core.analysis.checkpoints import checkpoints_of
    from dashboard.parts.checkpoints import heatmap_figure

    found = gates(args.rows, args.classes, args.candidates)
    t_grid, grid = best_of(args.runs, lambda: checkpoints_of("baseline", found))
    t_fig, figure = best_of(args.runs, lambda: heatmap_figure(grid, (3, 1)))
    t_json, spec = best_of(args.runs, lambda: plotly.io.to_json(figure, validate=False))
    r_fig, ref = best_of(args.runs, lambda: reference_figure(grid))
    r_json, ref_spec = best_of(args.runs, lambda: plotly.io.to_json(ref, validate=False))
    draws = {} if args.no_browser else browser_draws({"ours": spec, "ref": ref_spec}, args.runs)
    marks = int((grid.values["verdict"] != "").sum())
    cells = grid.values["change"].size
    ours_total = t_grid + t_fig + t_json + draws.get("ours", 0.0)
    ref_total = t_grid + r_fig + r_json + draws.get("ref", 0.0)

    def cell(s: float | None) -> str:
        return "not run" if s is None else f"{s:.3f} s"

    print(
        f"\n## N-checkpoint heatmap: {args.candidates} candidates × {args.classes:,} classes "
        f"(+ overall) = {cells:,} cells, {marks} marked\n"
    )
    print(f"Best of {args.runs}; the checks themselves ({args.rows:,} images each) not timed.\n")
    print("| step | ours | target | reference (heatmap + an annotation per cell) |")
    print("|---|---|---|---|")
    print(f"| groups × candidates grid (`checkpoints_of`) | {cell(t_grid)} | | (same grid) |")
    print(f"| build the figure | {cell(t_fig)} | | {cell(r_fig)} |")
    print(f"| its JSON (`plotly.io.to_json`, as `st.plotly_chart`) | {cell(t_json)} | | "
          f"{cell(r_json)} |")  # fmt: skip
    print(f"| JSON size | {len(spec) / 1e6:.2f} MB | | {len(ref_spec) / 1e6:.2f} MB |")
    print(f"| Chromium: parse + `Plotly.newPlot` | {cell(draws.get('ours'))} | | "
          f"{cell(draws.get('ref'))} |")  # fmt: skip
    print(f"| **total** | **{ours_total:.3f} s** | ≤ {TARGET_S:g} s | {ref_total:.3f} s |")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average (1, 5, 15 min): {load}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
