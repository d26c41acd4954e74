"""N checkpoints against one baseline: the groups × candidates grid of the Compare page.

Each candidate is checked against the baseline as ``python -m core check`` checks one
(:func:`core.analysis.regression.check_results`: paired images, McNemar's exact test per group,
Holm within each candidate). A candidate that cannot be paired (another dataset, other classes,
not the same images) is left out with the reason, so one bad checkpoint does not hide the
others. The gates' tables are laid out as arrays of groups (rows) × candidates (columns), one
NumPy assignment per column of the table: 1,000 classes × 5 candidates take milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.analysis.regression import (
    Gate,
    NotComparableError,
    changes_table,
    check_results,
)
from core.results import Results

__all__ = ["GRID_VALUES", "Checkpoints", "check_checkpoints", "checkpoints_of"]

#: The per-cell values of the grid (columns of :func:`core.analysis.regression.changes_table`).
GRID_VALUES = (
    "n",
    "baseline",
    "candidate",
    "change",
    "broken",
    "fixed",
    "p_raw",
    "p",
    "verdict",
)


@dataclass(frozen=True, eq=False)
class Checkpoints:
    """Candidates checked against one baseline, as a grid of groups × candidates.

    ``groups`` (R rows: ``group``, ``name``) are the rows in the gates' order (overall, the
    classes in class order, then slices); ``values[v]`` is an ``[R, C]`` array for each of
    :data:`GRID_VALUES` (NaN, or "" for ``verdict``, where a candidate lacks a group), the
    columns in the order of ``gates``. ``refused`` says why each left-out candidate cannot be
    compared.
    """

    baseline: str
    gates: dict[str, Gate]
    refused: dict[str, str]
    groups: pd.DataFrame
    values: dict[str, np.ndarray] = field(repr=False)

    @property
    def candidates(self) -> list[str]:
        """The compared candidates: the grid's columns, in order."""
        return list(self.gates)

    def row_of(self, group: str, name: str) -> int | None:
        """The grid row of a group (None when no compared image belongs to it)."""
        found = np.flatnonzero(
            (self.groups["group"].to_numpy() == group) & (self.groups["name"].to_numpy() == name)
        )
        return int(found[0]) if len(found) else None

    def significant_rows(self) -> np.ndarray:
        """Rows (indices into ``groups``) where any candidate regressed or improved, with the
        overall row always first."""
        keep = (self.values["verdict"] != "").any(axis=1) | (self.groups["group"] == "overall")
        return np.flatnonzero(np.asarray(keep))

    def subset(self, rows: np.ndarray) -> Checkpoints:
        """The same grid with only ``rows`` (indices into ``groups``), in that order."""
        groups = self.groups.iloc[rows].reset_index(drop=True)
        values = {k: v[rows] for k, v in self.values.items()}
        return Checkpoints(self.baseline, self.gates, self.refused, groups, values)

    def within(self, positions: np.ndarray) -> Checkpoints:
        """The grid on only some of the baseline's images, e.g. one slice of the test set:
        ``positions`` is bool over the baseline's evaluated rows (``Results.true``'s order);
        each candidate's check is run again on the images it pairs there
        (:meth:`core.analysis.regression.Gate.subset`), so every group keeps only those."""
        keep = np.asarray(positions, bool)
        gates = {m: g.subset(keep[g.comparison.rows_a]) for m, g in self.gates.items()}
        return checkpoints_of(self.baseline, gates, self.refused)

    def accuracy(self, order: Sequence[str] | None = None) -> pd.DataFrame:
        """Accuracy of each group (rows, as ``groups``) under each checkpoint (columns): the
        baseline and the candidates, in ``order`` (default: baseline first)."""
        columns = {self.baseline: _first_finite(self.values["baseline"])}
        for i, model in enumerate(self.gates):
            columns[model] = self.values["candidate"][:, i]
        chosen = list(order) if order is not None else list(columns)
        frame = pd.DataFrame({m: columns[m] for m in chosen if m in columns})
        return pd.concat([self.groups.reset_index(drop=True), frame], axis=1)


def check_checkpoints(
    baseline: Results,
    candidates: Mapping[str, Results],
    baseline_name: str | None = None,
    by: Sequence[str] = ("overall", "class"),
    slices: Mapping[str, np.ndarray] | None = None,
    alpha: float = 0.05,
    min_drop: float = 0.01,
) -> Checkpoints:
    """Each candidate (keyed by the name to show) checked against ``baseline``; candidates
    that cannot be paired with it are left out with the reason (:attr:`Checkpoints.refused`)."""
    gates: dict[str, Gate] = {}
    refused: dict[str, str] = {}
    for name, result in candidates.items():
        try:
            gates[name] = check_results(baseline, result, by, slices, alpha, min_drop)
        except NotComparableError as exc:
            refused[name] = str(exc)
    base = baseline_name if baseline_name is not None else baseline.meta.get("model", "")
    return checkpoints_of(base, gates, refused)


def checkpoints_of(
    baseline: str, gates: Mapping[str, Gate], refused: Mapping[str, str] | None = None
) -> Checkpoints:
    """Lay existing gates (keyed by candidate) out as the groups × candidates grid."""
    table = changes_table(gates)
    keys = pd.MultiIndex.from_frame(table[["group", "name"]])
    groups = table[["group", "name"]].drop_duplicates(ignore_index=True)  # first gate's order
    rows = pd.MultiIndex.from_frame(groups).get_indexer(keys)
    columns = pd.Index(list(gates)).get_indexer(table["model"])
    shape = (len(groups), len(gates))
    values: dict[str, np.ndarray] = {}
    for name in GRID_VALUES:
        grid = np.full(shape, "", dtype=object) if name == "verdict" else np.full(shape, np.nan)
        grid[rows, columns] = table[name].to_numpy()
        values[name] = grid
    return Checkpoints(baseline, dict(gates), dict(refused or {}), groups, values)


def _first_finite(grid: np.ndarray) -> np.ndarray:
    """Per row, the first non-NaN value across the columns (the baseline's accuracy is the
    same in every gate that has the group)."""
    if grid.shape[1] == 0:
        return np.full(grid.shape[0], np.nan)
    finite = ~np.isnan(grid)
    first = np.argmax(finite, axis=1)
    out = grid[np.arange(grid.shape[0]), first]
    return np.where(finite.any(axis=1), out, np.nan)
