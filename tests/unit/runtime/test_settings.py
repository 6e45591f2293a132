"""Shared server settings: a bad log level fails at load, naming the variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adgen_runtime.settings import ServerSettings


def test_log_level_is_case_insensitive() -> None:
    assert ServerSettings(log_level=" debug ").log_level == "DEBUG"


def test_unknown_log_level_is_a_settings_error_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="log_level"):
        ServerSettings(log_level="verbose")
