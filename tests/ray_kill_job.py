"""A Ray evaluation whose model actor kills its own process once, mid-run (run by test_ray_engine).

    python -m tests.ray_kill_job CONFIG DATASET OUT MARKERS

Runs the local engine (no address) on ``DATASET`` into the result folder ``OUT``. The first actor
to reach its second batch writes ``MARKERS/killed`` and SIGKILLs itself; the restarted actor
finds the marker and carries on. Every actor start appends a line to ``MARKERS/starts``.
"""

from __future__ import annotations

import os
import signal
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.config import ModelSpec, load_config
from core.data.datasets import open_dataset
from core.data.models import load_model
from core.results import ray_engine
from core.results.evaluate import evaluate

MARKERS = Path(os.environ.get("RAY_KILL_MARKERS", "."))


class KillOnce(ray_engine.ModelActor):
    """The engine's actor, but the first one to reach its second batch dies (SIGKILL)."""

    def __init__(
        self,
        spec: ModelSpec,
        layer: str | None,
        map_shape: tuple[int, int] | None,
        threads: int,
        embeddings: bool = False,
    ) -> None:
        super().__init__(spec, layer, map_shape, threads, embeddings)
        with (MARKERS / "starts").open("a") as file:
            file.write(f"{os.getpid()}\n")
        self.calls = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        self.calls += 1
        if self.calls == 2 and not (MARKERS / "killed").exists():
            (MARKERS / "killed").write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)


def main(config: str, dataset: str, out: str) -> int:
    project = load_config(Path(config))
    model = load_model(project.model("digits-cnn"))
    data = open_dataset(project.dataset(dataset), model.spec.classes)
    engine = partial(ray_engine.predict, actor=KillOnce)
    result = evaluate(model, data, out=Path(out), batch_size=16, engine=engine)
    print(f"rows={len(result.predictions)} skipped={len(result.skipped)}")
    return 0


if __name__ == "__main__":
    MARKERS = Path(sys.argv[4])
    os.environ["RAY_KILL_MARKERS"] = str(
        MARKERS
    )  # the actors read it (they run in other processes)
    sys.exit(main(*sys.argv[1:4]))
