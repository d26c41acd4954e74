"""What a user is looking at, as it lives in the URL's query parameters (pure, no streamlit).

A copied URL restores the same view: model, dataset, selected cell, sort, page, CAM settings.
Unknown or malformed values fall back to defaults instead of failing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace

__all__ = [
    "COLOR_MODES",
    "METHODS",
    "PAGE_SIZES",
    "SORTS",
    "ViewState",
    "parse_view",
    "to_params",
]

SORTS = {
    "confidence_desc": ("confidence", False, "confidence (highest first)"),
    "confidence_asc": ("confidence", True, "confidence (lowest first)"),
    "true_prob_asc": ("true_prob", True, "true-class probability (lowest first)"),
    "true_prob_desc": ("true_prob", False, "true-class probability (highest first)"),
    "loss_desc": ("loss", False, "loss (highest first)"),
    "loss_asc": ("loss", True, "loss (lowest first)"),
    "label_quality_asc": ("label_quality", True, "label quality (most suspect label first)"),
    "faithfulness_asc": ("faithfulness", True, "map faithfulness (least faithful maps first)"),
}
COLOR_MODES = {"count": "count", "row": "share of row (recall)", "col": "share of column"}
METHODS = ("Grad-CAM", "Grad-CAM++", "CAM", "Saliency")
PAGE_SIZES = (12, 24, 48, 96)
MAX_WHERE = 2_000  # characters of a slice in the URL


@dataclass(frozen=True)
class ViewState:
    """Everything the URL remembers."""

    model: str = ""
    dataset: str = ""
    cell: tuple[int, int] | None = None
    sort: str = "confidence_desc"
    page: int = 1
    page_size: int = 24
    method: str = "Grad-CAM"
    layer: str = ""
    opacity: float = 0.5
    color: str = "count"
    top: int = (
        0  # 0: the default (all classes, or the 20 most confused past 30); N: N most confused
    )
    focus: int = -1  # a class and its most confused partners (large matrices)
    block: tuple[int, int] | None = None  # a block of the overview (large matrices)
    tag: str = ""  # only images carrying this tag
    pattern: int = 0  # only the images of this pattern of the cell (1-based; 0: all)
    where: str = ""  # the slice every page is restricted to (core.analysis.slices URL form)

    def with_cell(self, cell: tuple[int, int] | None) -> ViewState:
        """A new selection starts at page 1, with all its images."""
        return replace(self, cell=cell, page=1, pattern=0)


def parse_view(
    params: Mapping[str, str],
    models: Sequence[str],
    datasets: Sequence[str],
    num_classes: int | None = None,
) -> ViewState:
    """Read a view from query parameters; anything invalid is replaced by its default."""
    default = ViewState(model=models[0] if models else "", dataset=datasets[0] if datasets else "")
    get = params.get
    return ViewState(
        model=_choice(get("model"), models, default.model),
        dataset=_choice(get("dataset"), datasets, default.dataset),
        cell=_cell(get("cell"), num_classes),
        sort=_choice(get("sort"), list(SORTS), default.sort),
        page=_int(get("page"), default.page, 1, 1_000_000),
        page_size=_int_choice(get("page_size"), PAGE_SIZES, default.page_size),
        method=_choice(get("method"), METHODS, default.method),
        layer=(get("layer") or "")[:200],
        opacity=_float(get("opacity"), default.opacity, 0.0, 1.0),
        color=_choice(get("color"), list(COLOR_MODES), default.color),
        top=_int(get("top"), 0, 0, 10_000),
        focus=_int(get("focus"), -1, 0, (num_classes or 1_000_000) - 1),
        block=_cell(get("block"), 1_000),
        tag=(get("tag") or "")[:100],
        pattern=_int(get("pattern"), 0, 1, 10_000),
        where=(get("where") or "")[:MAX_WHERE],
    )


def to_params(view: ViewState) -> dict[str, str]:
    """Query parameters for ``view``; defaults are left out to keep URLs short."""
    default = asdict(ViewState())
    out = {}
    for f in fields(view):
        value = getattr(view, f.name)
        if f.name in ("model", "dataset") or value != default[f.name]:
            out[f.name] = _format(value)
    return out


def _format(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _choice(value: str | None, allowed: Sequence[str], default: str) -> str:
    return value if value in allowed else default


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if lo <= number <= hi else default


def _int_choice(value: str | None, allowed: Sequence[int], default: int) -> int:
    number = _int(value, default, 1, max(allowed))
    return number if number in allowed else default


def _float(value: str | None, default: float, lo: float, hi: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if lo <= number <= hi else default


def _cell(value: str | None, num_classes: int | None) -> tuple[int, int] | None:
    try:
        true, pred = (int(v) for v in (value or "").split(","))
    except ValueError:
        return None
    limit = num_classes if num_classes is not None else 1_000_000
    return (true, pred) if 0 <= true < limit and 0 <= pred < limit else None
