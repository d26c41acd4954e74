"""The Map figure's density picture: where it is placed and what the axes span."""

from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from core.analysis.embedding_map import density
from dashboard.parts.map_figure import _draw_density


def test_the_density_picture_covers_every_point_and_the_axes_span_it() -> None:
    rng = np.random.default_rng(3)
    xy = np.concatenate([rng.normal(0, 1, (5_000, 2)), rng.normal((8, -4), 0.5, (500, 2))])
    counts, xs, ys = density(xy, bins=50)
    fig = go.Figure()
    _draw_density(fig, counts, xs, ys)
    (image,) = fig.layout.images
    assert (image.xref, image.yref, image.layer, image.sizing) == ("x", "y", "below", "stretch")
    x0, x1, y1 = image.x, image.x + image.sizex, image.y
    y0 = y1 - image.sizey
    (lo_x, lo_y), (hi_x, hi_y) = xy.min(0), xy.max(0)  # histogram2d's outer edges
    assert np.allclose([x0, x1, y0, y1], [lo_x, hi_x, lo_y, hi_y])
    assert list(fig.layout.xaxis.range) == [x0, x1] and list(fig.layout.yaxis.range) == [y0, y1]
    png = base64.b64decode(image.source.removeprefix("data:image/png;base64,"))
    alpha = np.asarray(Image.open(io.BytesIO(png)))[..., 3]
    assert alpha.shape == counts.shape
    assert ((alpha[::-1] > 0) == (counts > 0)).all()  # top row: the highest y
