"""Copywriter settings: env prefix, the standard OPENAI_* variables, and the 'auto' backend choice."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adgen_copywriter.config import BackendChoice, CopywriterSettings
from adgen_copywriter.server import build_backend
from adgen_copywriter.template import TemplateBackend

_ENV = (
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "ADGEN_COPYWRITER_LLM_BASE_URL",
    "ADGEN_COPYWRITER_LLM_API_KEY",
    "ADGEN_COPYWRITER_BACKEND",
    "ADGEN_COPYWRITER_PORT",
    "ADGEN_COPYWRITER_LLM_MODEL",
    "ADGEN_COPYWRITER_LLM_TEMPERATURE",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_offline_template_on_port_50052() -> None:
    settings = CopywriterSettings()
    assert settings.port == 50052 and settings.llm_model == "gpt-4o-mini"
    assert settings.backend is BackendChoice.AUTO and not settings.uses_llm()
    assert isinstance(build_backend(settings), TemplateBackend)


def test_standard_openai_variables_select_the_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:11434/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    settings = CopywriterSettings()
    assert settings.llm_base_url == "http://localhost:11434/v1" and settings.uses_llm()
    assert settings.llm_api_key is not None and settings.llm_api_key.get_secret_value() == "sk-secret-value"
    assert "sk-secret-value" not in repr(settings) and "sk-secret-value" not in str(settings.model_dump())


def test_service_variables_win_over_the_standard_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://openai.example/v1")
    monkeypatch.setenv("ADGEN_COPYWRITER_LLM_BASE_URL", "http://vllm:8000/v1")
    monkeypatch.setenv("ADGEN_COPYWRITER_LLM_MODEL", "Qwen/Qwen3-8B")
    monkeypatch.setenv("ADGEN_COPYWRITER_PORT", "6000")
    settings = CopywriterSettings()
    assert (settings.llm_base_url, settings.llm_model, settings.port) == ("http://vllm:8000/v1", "Qwen/Qwen3-8B", 6000)


def test_template_choice_ignores_a_configured_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("ADGEN_COPYWRITER_BACKEND", "template")
    assert not CopywriterSettings().uses_llm()


def test_settings_accept_field_names_in_code() -> None:
    settings = CopywriterSettings(port=0, llm_base_url="http://127.0.0.1:9/v1", backend=BackendChoice.LLM)
    assert settings.uses_llm() and settings.port == 0


def test_llm_backend_without_endpoint_or_key_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADGEN_COPYWRITER_BACKEND", "llm")
    with pytest.raises(ValidationError, match="needs"):
        CopywriterSettings()


def test_temperature_null_omits_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADGEN_COPYWRITER_LLM_TEMPERATURE", "null")
    assert CopywriterSettings().llm_temperature is None


def test_blank_endpoint_and_key_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # docker-compose passes `${OPENAI_BASE_URL:-}` as "" when the operator sets only a key.
    monkeypatch.setenv("OPENAI_BASE_URL", "")
    monkeypatch.setenv("OPENAI_API_KEY", " ")
    assert CopywriterSettings().uses_llm() is False
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    settings = CopywriterSettings()
    assert settings.llm_base_url is None and settings.uses_llm()
