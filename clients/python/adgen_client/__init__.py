"""Python SDK and CLI for the AdGen ad API."""
