"""What the dashboard keeps between reruns: server-wide resources and caches, and URL state.

- :mod:`~dashboard.state.settings`: the server's command line (which project, read-only, login).
- :mod:`~dashboard.state.resources`: config, models, datasets, evaluations, metrics, map and
  panel caches, loaded once per server and shared by every session.
- :mod:`~dashboard.state.analyses`: analyses of an evaluation computed once per server, most on a
  background thread (label quality, comparison, patterns, layer faithfulness, map layouts).
- :mod:`~dashboard.state.view_state`: the view as it lives in the URL (pure, no streamlit).
- :mod:`~dashboard.state.url`: widgets whose value is a query parameter.
- :mod:`~dashboard.state.polling`: polls of background work that end without a page rerun.

Nothing here draws a page; :mod:`dashboard.parts` and :mod:`dashboard.views` do.
"""
