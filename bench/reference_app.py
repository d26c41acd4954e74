"""The floor for a page load: a bare Streamlit page, one title and one small Plotly chart.

``bench/scale.py --browser`` serves it with the dashboard's own helpers and times it like the
dashboard (open the URL → chart drawn), so the dashboard's rows have a reference in the same run.
The chart has two traces, a heatmap and a scatter, like the confusion matrix.
"""

import plotly.graph_objects as go
import streamlit as st

st.title("Reference page")
figure = go.Figure([go.Heatmap(z=[[1, 2], [3, 4]]), go.Scatter(x=[0, 1], y=[0, 1])])
figure.update_layout(width=400, height=400)
st.plotly_chart(figure)
