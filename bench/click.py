"""Click → first gallery page, measured in headless Chromium against a real server.

    python bench/click.py [--rounds 4]

Three kinds of click on every non-empty cell of the sample:

* cold: Grad-CAM++ (not the default method, so nothing was computed ahead): the page's maps
  are computed and its panels encoded on the click;
* first visit in the default view: page 1 was computed by the server's warm-up thread when
  the predictions were ready;
* revisit: the same cells again (``--rounds`` - 1 more rounds).

The mouse is first moved onto the cell until Plotly's hover shows it (a person's click follows
the cell's tooltip; see ``tests.browser.point_at_cell``), then pressed: the time runs from
that press to the moment the cell's heading and every image of its first page are loaded.
Targets on the sample on a 2-core CPU: p50 ≤ 1 s for a cold click, p50 ≤ 0.3 s for a first
visit with stored maps (issue #13).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import (  # noqa: E402
    chromium,
    new_page,
    point_at_cell,
    streamlit_server,
    wait_for_gallery,
    wait_for_matrix,
)
from tests.projects import expected, write_config  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    config = write_config(Path(tempfile.mkdtemp(prefix="bench-click-")))
    result = expected(config)
    counts = result.predictions.groupby(["true", "pred"]).size()
    cells = [(int(t), int(p)) for (t, p) in counts.index]
    names = result.classes
    cold, first, again = "cold (Grad-CAM++)", "first visit (warmed)", "revisit"
    timings: dict[str, list[float]] = {cold: [], first: [], again: []}
    plan = [(cold, "?method=Grad-CAM%2B%2B")] + [(first, "")] + [(again, "")] * (args.rounds - 1)
    with streamlit_server("--config", str(config)) as url, chromium() as browser:
        page = new_page(browser)
        query = None
        for kind, params in plan:
            if params != query:
                page.goto(url + "/" + params)
                wait_for_matrix(page)
                page.wait_for_timeout(3_000)  # the warm-up thread is done
                query = params
            for true, pred in cells:  # consecutive cells differ: a second click would deselect
                point_at_cell(page, true, pred)  # a person points, sees the tooltip, clicks
                start = time.perf_counter()
                page.mouse.down()
                page.mouse.up()
                wait_for_gallery(page, names[true], names[pred])
                timings[kind].append(time.perf_counter() - start)
    print(f"\nclick → first page on the sample ({len(cells)} non-empty cells, page size 24)\n")
    print(f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| clicks | n | p50 s | p95 s | max s | target p50 |")
    print("|---|---|---|---|---|---|")
    targets = {cold: 1.0, first: 0.3, again: 0.3}
    for kind, values in timings.items():
        if values:
            p50, target = statistics.median(values), targets[kind]
            print(
                f"| {kind} | {len(values)} | {p50:.3f} | {percentile(values, 0.95):.3f} | "
                f"{max(values):.3f} | ≤ {target} s {'PASS' if p50 <= target else 'FAIL'} |"
            )


if __name__ == "__main__":
    main()
