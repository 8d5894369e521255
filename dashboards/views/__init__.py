"""One Streamlit page per file; ``dashboards/app.py`` routes between them with st.navigation."""
