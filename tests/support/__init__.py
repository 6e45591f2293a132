"""Fakes shared by unit and integration tests."""
