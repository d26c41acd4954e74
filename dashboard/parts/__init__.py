"""The pieces pages are made of, one module per thing a user sees on a page.

Each module draws with streamlit and reads what it needs from :mod:`dashboard.state`; none
imports a page (:mod:`dashboard.views`), and none imports another part that imports it back.
"""
