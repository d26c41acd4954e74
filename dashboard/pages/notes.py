"""Tags & notes: everything the team wrote, with a CSV export."""

import streamlit as st

st.title("Tags & notes")
st.info("Coming with team sessions.")
