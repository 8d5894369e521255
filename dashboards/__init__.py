"""The Streamlit dashboard; it reads only through ``pipeline.cloud.store``."""
