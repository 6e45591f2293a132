"""Settings from the environment: lists as JSON or comma-separated, and a bad value is one line naming its variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from adgen_copywriter.config import CopywriterSettings
from adgen_orchestrator.config import OrchestratorSettings
from adgen_runtime.settings import BAD_SETTINGS_EXIT_CODE, env_variable, load_settings, settings_problems

BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("ADGEN_", "OPENAI_")):
            monkeypatch.delenv(name)


def _problems(settings_cls: type[OrchestratorSettings] | type[CopywriterSettings]) -> list[str]:
    try:
        settings_cls()
    except (ValidationError, SettingsError) as error:
        return settings_problems(settings_cls, error, os.environ)
    raise AssertionError("the settings were accepted")


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("https://a.example,https://b.example", ["https://a.example", "https://b.example"]),
        (" https://a.example , https://b.example:8443 ", ["https://a.example", "https://b.example:8443"]),
        ('["https://a.example", "http://127.0.0.1:8501"]', ["https://a.example", "http://127.0.0.1:8501"]),
        ("*", ["*"]),
        ("", []),
    ],
)
def test_cors_origins_are_read_comma_separated_or_as_json(
    monkeypatch: pytest.MonkeyPatch, value: str, origins: list[str]
) -> None:
    monkeypatch.setenv("ADGEN_ORCHESTRATOR_HTTP_CORS_ORIGINS", value)
    assert OrchestratorSettings().http_cors_origins == origins


def test_malformed_json_list_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADGEN_ORCHESTRATOR_HTTP_CORS_ORIGINS", '["https://a.example"')
    assert _problems(OrchestratorSettings) == ["ADGEN_ORCHESTRATOR_HTTP_CORS_ORIGINS: is not valid JSON"]


def test_an_entry_that_is_no_origin_is_refused_rather_than_silently_matching_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADGEN_ORCHESTRATOR_HTTP_CORS_ORIGINS", "https://a.example,https://b.example/app")
    (line,) = _problems(OrchestratorSettings)
    assert line.startswith("ADGEN_ORCHESTRATOR_HTTP_CORS_ORIGINS: 'https://b.example/app' is not")


def test_every_bad_setting_gets_its_own_line_naming_its_variable_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADGEN_ORCHESTRATOR_PORT", "99999")
    monkeypatch.setenv("ADGEN_ORCHESTRATOR_LOG_LEVEL", "chatty")
    monkeypatch.setenv("ADGEN_ORCHESTRATOR_DEADLINE_MARGIN_S", "soon")
    assert _problems(OrchestratorSettings) == [
        "ADGEN_ORCHESTRATOR_PORT: Input should be less than or equal to 65535",
        "ADGEN_ORCHESTRATOR_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        "ADGEN_ORCHESTRATOR_DEADLINE_MARGIN_S: Input should be a valid number, unable to parse string as a number",
    ]


def test_a_bad_enum_and_number_of_the_copywriter_are_named_in_field_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADGEN_COPYWRITER_LLM_TEMPERATURE", "warm")
    monkeypatch.setenv("ADGEN_COPYWRITER_BACKEND", "gpt")
    assert _problems(CopywriterSettings) == [
        "ADGEN_COPYWRITER_BACKEND: Input should be 'auto', 'template' or 'llm'",
        "ADGEN_COPYWRITER_LLM_TEMPERATURE: Input should be a valid number, unable to parse string as a number",
    ]


def test_an_aliased_setting_is_named_by_the_variable_that_was_set_else_by_all_of_them() -> None:
    assert env_variable(CopywriterSettings, "llm_api_key", {"openai_api_key": "x"}) == "OPENAI_API_KEY"
    assert env_variable(CopywriterSettings, "llm_api_key", {}) == "ADGEN_COPYWRITER_LLM_API_KEY or OPENAI_API_KEY"


def test_a_check_across_settings_names_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ADGEN_COPYWRITER_LLM_BASE_URL", "ADGEN_COPYWRITER_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ADGEN_COPYWRITER_BACKEND", "llm")
    (line,) = _problems(CopywriterSettings)
    assert line.startswith("ADGEN_COPYWRITER_*: backend 'llm' needs ")


def test_load_settings_exits_with_status_2_after_printing_the_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADGEN_ORCHESTRATOR_HTTP_PORT", "-1")
    with pytest.raises(SystemExit) as raised:
        load_settings(OrchestratorSettings)
    assert raised.value.code == BAD_SETTINGS_EXIT_CODE == 2
    assert capsys.readouterr().err == "ADGEN_ORCHESTRATOR_HTTP_PORT: Input should be greater than or equal to 0\n"


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        ("adgen-orchestrator", "ADGEN_ORCHESTRATOR_HTTP_CORS_ORIGINS", '["https://a.example"'),
        ("adgen-orchestrator", "ADGEN_ORCHESTRATOR_PORT", "99999"),
        ("adgen-copywriter", "ADGEN_COPYWRITER_LLM_TIMEOUT_S", "-5"),
        ("adgen-diffusion", "ADGEN_DIFFUSION_QUEUE_MAX", "0"),
        ("adgen-web", "ADGEN_WEB_TIMEOUT_S", "forever"),
    ],
)
def test_each_console_script_stops_with_one_line_and_status_2_and_no_traceback(
    command: str, variable: str, value: str
) -> None:
    env = {**os.environ, variable: value}
    done = subprocess.run([str(BIN / command)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith(variable)]
    assert line.startswith(f"{variable}: ") and value not in line.removeprefix(variable)
