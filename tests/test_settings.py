"""Back-end selection and validation from flags and environment variables."""

import subprocess
import sys

import pytest

from local_code_interpreter.models import build_chat_client
from local_code_interpreter.offline import EmbeddedChatClient, extract_code
from local_code_interpreter.settings import ConfigError, load, load_model
from service import ROOT, clean_env

AZURE = {"AZURE_OPENAI_ENDPOINT": "https://contoso.openai.azure.com/", "AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME": "gpt-4o"}


def test_nothing_configured_is_the_embedded_default():
    model = load_model({})
    assert model.kind == "embedded"
    assert isinstance(build_chat_client(model), EmbeddedChatClient)
    assert "no model configured" in model.describe()


def test_azure_uses_default_azure_credential_without_a_key():
    model = load_model(AZURE)
    assert (model.kind, model.deployment, model.api_key) == ("azure-openai", "gpt-4o", "")
    assert "DefaultAzureCredential" in model.describe()
    client = build_chat_client(model)
    assert str(client.client.base_url) == "https://contoso.openai.azure.com/openai/v1/"
    assert client.client.max_retries == 4


def test_azure_wins_over_openai_and_key_is_opt_in_and_never_described():
    model = load_model({**AZURE, "OPENAI_API_KEY": "sk-test", "AZURE_OPENAI_API_KEY": "secret-value"})
    assert model.kind == "azure-openai" and model.api_key == "secret-value"
    assert "secret-value" not in model.describe() and "secret-value" not in repr(model)


def test_openai_with_key_and_model():
    model = load_model({"OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "gpt-test", "LCI_MODEL_MAX_RETRIES": "2"})
    assert (model.kind, model.model, model.max_retries) == ("openai", "gpt-test", 2)
    assert build_chat_client(model).client.max_retries == 2
    assert "sk-test" not in model.describe()


@pytest.mark.parametrize("env, names", [
    ({"AZURE_OPENAI_ENDPOINT": "contoso.openai.azure.com", "AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME": "x"}, "AZURE_OPENAI_ENDPOINT"),
    ({"AZURE_OPENAI_ENDPOINT": "https://contoso.openai.azure.com/"}, "AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME"),
    ({"AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME": "gpt-4o"}, "AZURE_OPENAI_ENDPOINT"),
    ({"LCI_MODEL_MAX_RETRIES": "lots"}, "LCI_MODEL_MAX_RETRIES"),
])
def test_model_errors_name_the_variable(env, names):
    with pytest.raises(ConfigError, match=names):
        load_model(env)


def test_flags_win_over_environment_and_hyperlight_selects_its_sandbox():
    settings = load({"port": "9000", "timeout": None}, {"LCI_PORT": "8000", "LCI_TIMEOUT_SECONDS": "3.5"})
    assert settings.port == 9000 and settings.limits.timeout_seconds == 3.5
    settings = load({}, {"LCI_HYPERLIGHT": "javascript"})
    assert (settings.sandbox, settings.language) == ("hyperlight", "javascript")


@pytest.mark.parametrize("flags, env, names", [
    ({}, {"LCI_SANDBOX": "docker"}, "LCI_SANDBOX"),
    ({"sandbox": "docker"}, {}, "--sandbox"),
    ({}, {"LCI_PORT": "70000"}, "LCI_PORT"),
    ({}, {"LCI_TIMEOUT_SECONDS": "soon"}, "LCI_TIMEOUT_SECONDS"),
    ({}, {"LCI_MEMORY_MB": "1"}, "LCI_MEMORY_MB"),
    ({}, {"LCI_DEVUI_MODE": "admin"}, "LCI_DEVUI_MODE"),
    ({}, {"LCI_HYPERLIGHT": "ruby"}, "LCI_HYPERLIGHT"),
    ({}, {"LCI_LOG_LEVEL": "LOUD"}, "LCI_LOG_LEVEL"),
    ({}, {"LCI_QUEUE_TIMEOUT_SECONDS": "forever"}, "LCI_QUEUE_TIMEOUT_SECONDS"),
    ({}, {"LCI_QUEUE_LENGTH": "-1"}, "LCI_QUEUE_LENGTH"),
])
def test_setting_errors_name_the_variable(flags, env, names):
    with pytest.raises(ConfigError, match=names):
        load(flags, env)


@pytest.mark.parametrize("env", [
    {"AZURE_OPENAI_ENDPOINT": "not a url", "AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME": "x"},
    {"LCI_SANDBOX": "docker"},
    {"LCI_DISK_BUDGET_MB": "256", "LCI_MAX_SESSIONS": "3", "LCI_SESSION_DISK_MB": "512"},  # would not fit its disk
])
def test_cli_configuration_error_is_one_line_exit_2(env):
    done = subprocess.run([sys.executable, "-m", "local_code_interpreter", "--devui", "--no-browser"],
                          env=clean_env(**env), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and next(iter(env)) in done.stderr


@pytest.mark.parametrize("message, code", [
    ("print(1)", "print(1)"),
    ("run this:\n```python\nx = 2\nprint(x)\n```\nthanks", "x = 2\nprint(x)\n"),
    ("```\na=1\n```\nand\n```py\nprint(a)\n```", "a=1\n\nprint(a)\n"),
    ("what is the weather today?", None),
    ("   ", None),
])
def test_extract_code(message, code):
    assert extract_code(message) == code


def test_session_settings_default_and_validate():
    sessions = load({}, {}).sessions
    assert (sessions.idle_seconds, sessions.disk_mb, sessions.memory_mb, sessions.max_upload_mb) == (1200.0, 512, 512,
                                                                                                      128)
    assert sessions.max_sessions >= 1  # sized to this host's memory (sessions.default_max_sessions)
    env = {"LCI_SESSION_IDLE_SECONDS": "90", "LCI_MAX_SESSIONS": "7", "LCI_SESSION_DISK_MB": "100",
           "LCI_SESSION_MEMORY_MB": "256", "LCI_MAX_UPLOAD_MB": "10"}
    sessions = load({}, env).sessions
    assert (sessions.idle_seconds, sessions.max_sessions, sessions.disk_mb, sessions.memory_mb,
            sessions.max_upload_mb) == (90.0, 7, 100, 256, 10)
    assert load({}, {"LCI_MEMORY_MB": "128"}).sessions.memory_mb == 128  # follows the execution memory limit
    for name, bad in (("LCI_SESSION_IDLE_SECONDS", "soon"), ("LCI_SESSION_IDLE_SECONDS", "0"),
                      ("LCI_MAX_SESSIONS", "0"), ("LCI_SESSION_DISK_MB", "-1"), ("LCI_SESSION_MEMORY_MB", "8"),
                      ("LCI_MAX_UPLOAD_MB", "lots")):
        with pytest.raises(ConfigError, match=name):
            load({}, {name: bad})


def test_a_disk_budget_sizes_the_session_quota_so_that_all_directories_full_still_fit():
    """LCI_DISK_BUDGET_MB (in a pod, the container's ephemeral-storage limit): every session and one-shot execution
    at its quota, plus the reserve, must fit, or one execution's legitimate use could get the pod evicted for all."""
    assert load({}, {}).disk_budget_mb == 0 and load({}, {}).sessions.disk_mb == 512  # no budget: as before
    # kept back: 64 MiB of logs and 264 MiB of request bodies in flight (2 x (128 MiB uploads + 4 MiB))
    assert load({}, {}).bodies_in_flight_bytes == 2 * (128 + 4) * 1024 * 1024
    fits = load({}, {"LCI_DISK_BUDGET_MB": "2120", "LCI_MAX_SESSIONS": "3"})
    assert fits.disk_budget_mb == 2120 and fits.sessions.disk_mb == 512  # 2120 - 64 - 264 - 4 x 64 = 3 x 512
    assert load({}, {"LCI_DISK_BUDGET_MB": "2119", "LCI_MAX_SESSIONS": "3"}).sessions.disk_mb == 511
    lowered = load({}, {"LCI_DISK_BUDGET_MB": "1024", "LCI_MAX_SESSIONS": "8"}).sessions.disk_mb
    assert lowered == (1024 - 64 - 264 - 4 * 64) // 8 == 55
    smaller_uploads = load({}, {"LCI_DISK_BUDGET_MB": "1024", "LCI_MAX_SESSIONS": "8", "LCI_MAX_UPLOAD_MB": "8"})
    assert smaller_uploads.sessions.disk_mb == (1024 - 64 - 24 - 4 * 64) // 8 == 85
    explicit = load({}, {"LCI_DISK_BUDGET_MB": "1024", "LCI_MAX_SESSIONS": "8", "LCI_SESSION_DISK_MB": "50"})
    assert explicit.sessions.disk_mb == 50
    for env in ({"LCI_DISK_BUDGET_MB": "1024", "LCI_MAX_SESSIONS": "8", "LCI_SESSION_DISK_MB": "56"},
                {"LCI_DISK_BUDGET_MB": "256", "LCI_MAX_SESSIONS": "3"},
                {"LCI_DISK_BUDGET_MB": "4096", "LCI_MAX_SESSIONS": "2", "LCI_MAX_CONCURRENCY": "64"}):
        with pytest.raises(ConfigError, match="LCI_DISK_BUDGET_MB is .* remain for .* sessions") as caught:
            load({}, env)
        assert "ephemeral-storage" in str(caught.value)
    with pytest.raises(ConfigError, match="LCI_DISK_BUDGET_MB"):
        load({}, {"LCI_DISK_BUDGET_MB": "lots"})


def test_queue_settings():
    assert (load({}, {}).queue_timeout_seconds, load({}, {}).queue_length) == (30.0, 64)
    settings = load({}, {"LCI_QUEUE_TIMEOUT_SECONDS": "2.5", "LCI_QUEUE_LENGTH": "0"})
    assert (settings.queue_timeout_seconds, settings.queue_length) == (2.5, 0)


def test_every_setting_is_documented_in_the_readme():
    """A variable the service reads but the README's table leaves out is a setting nobody can find."""
    import os

    from local_code_interpreter.settings import ENV

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert [name for name in ENV.values() if f"| `{name}` |" not in readme] == []
