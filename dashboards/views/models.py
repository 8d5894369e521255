"""Model sync: per device kind, each site's last model delta and the merged model.

Nothing to show yet: edge nodes do not publish model deltas and the cloud merges none
(issues 5 and 6), so the store has no model records. The page says so instead of
inventing numbers.
"""

from __future__ import annotations

import streamlit as st

from dashboards import common

NOT_AVAILABLE = (
    "Model sync is not available yet: edge nodes do not publish model deltas and the cloud "
    "merges no model (issues 5 and 6), so the store holds no model records. This page will "
    "show, per device kind, the last delta from each site and the merged model's version "
    "and age once they exist."
)


st.title("Model sync")
st.info(NOT_AVAILABLE)
if common.connect() is not None:  # an empty or unreachable store is said here too
    st.caption("The store answers and holds data; none of it is a model yet.")
