"""AdGen web UI: a Streamlit page for shop owners to create and edit ads through the Python SDK."""
