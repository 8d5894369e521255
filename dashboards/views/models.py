"""Model sync: per device kind, each site's last model delta and the merged model's version and age.

Reads only through the store (``Store.latest_model_deltas`` and ``Store.latest_merged_models``),
which the cloud worker fills as it applies deltas (pipeline/cloud/models.py). When no site
ships deltas (``edge.model_key`` unset) the page says so instead of inventing numbers.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import common
from pipeline.cloud.store import Store

NO_MODELS = (
    "No model delta has been applied yet: edge nodes ship deltas only when `edge.model_key` is "
    "set, and the cloud applies those of the sites listed in `cloud.model_keys` "
    "(docs/protocol.md, Model delta)."
)


def render(store: Store, sites: list[str]) -> None:
    merged = store.latest_merged_models()
    deltas = store.latest_model_deltas()
    if not merged and not deltas:
        st.info(NO_MODELS)
        return
    now = common.now_ms()
    st.subheader("Merged models")
    st.dataframe(
        pd.DataFrame(
            [
                {"kind": m.kind, "version": m.version, "age_s": (now - m.ts) / 1000,
                 "readings": m.n, "sites": ", ".join(m.sites)}
                for m in merged
            ],
            columns=["kind", "version", "age_s", "readings", "sites"],
        ),
        hide_index=True,
        column_config={"age_s": st.column_config.NumberColumn("age (s)", format="%.0f")},
    )  # fmt: skip
    st.subheader("Last delta from each site")
    st.dataframe(
        pd.DataFrame(
            [
                {"kind": d.kind, "site": d.site, "node": d.node, "seq": d.seq,
                 "delta_age_s": (now - d.ts) / 1000, "delta_readings": d.n}
                for d in deltas
            ],
            columns=["kind", "site", "node", "seq", "delta_age_s", "delta_readings"],
        ),
        hide_index=True,
        column_config={"delta_age_s": st.column_config.NumberColumn("age (s)", format="%.0f")},
    )  # fmt: skip
    st.caption(
        "A delta summarises what one edge node learned about a kind since its previous one; "
        "the merged model adds every applied delta (docs/decisions/0004-model-deltas.md). "
        "Refused deltas are counted by the cloud worker, not stored."
    )


common.page("Model sync", render)
