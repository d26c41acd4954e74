"""The floor for a page load: a bare Streamlit page, one title and one small chart.

``bench/scale.py --browser`` serves it with the dashboard's own helpers and times it like the
dashboard (open the URL → chart drawn), so the dashboard's rows have a reference in the same run.
The chart is a 2 × 2 Vega-Lite heatmap drawn as SVG, like the confusion matrix; ``?plotly=1``
draws the same with Plotly, for comparison (Plotly's bundle is the larger one to load).
"""

import pandas as pd
import streamlit as st

st.title("Reference page")
cells = pd.DataFrame({"t": ["a", "a", "b", "b"], "p": ["a", "b", "a", "b"], "n": [1, 2, 3, 4]})
if st.query_params.get("plotly"):
    import plotly.graph_objects as go

    figure = go.Figure([go.Heatmap(z=[[1, 2], [3, 4]]), go.Scatter(x=[0, 1], y=[0, 1])])
    figure.update_layout(width=400, height=400)
    st.plotly_chart(figure)
else:
    spec = {
        "width": 300,
        "height": 300,
        "mark": "rect",
        "encoding": {
            "x": {"field": "p", "type": "nominal"},
            "y": {"field": "t", "type": "nominal"},
            "color": {"field": "n", "type": "quantitative"},
        },
        "usermeta": {"embedOptions": {"renderer": "svg"}},
    }
    st.vega_lite_chart(cells, spec, theme=None)
