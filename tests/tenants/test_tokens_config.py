"""API_TOKENS is parsed and checked at start: a bad value stops the process with one line
naming API_TOKENS that never repeats a token."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from boundq.core.config import ENV_VARIABLES, describe, load_settings
from boundq.core.errors import ConfigError
from tests.helpers import REPO_ROOT

SECRET = "s3cret-tok"
BAD = [
    ("{", "invalid JSON"),
    ('["a"]', "not an array"),
    ('"a"', "not a string"),
    ('{"t": "a"}', "list of queue names, not a string"),
    ('{"t": {"q": ["a"]}}', "list of queue names, not an object"),
    ('{"t": null}', "not null"),
    ('{"t": []}', "at least one queue"),
    ('{"t": ["a b"]}', 'queue "a b" must be'),
    ('{"t": [5]}', "queue 5 must be"),
    ('{"t": ["a,b"]}', "must be"),
    ('{"t": ["*", "a"]}', '"*" alone'),
    ('{"": ["a"]}', "token #1 is empty"),
    (f'{{"ok": ["a"], "{SECRET} x": ["a"]}}', "token #2 must be 1..1000 visible ASCII"),
    (f'{{"{SECRET}": ["a"], "x": ["b"], "{SECRET}": ["c"]}}', "token #3 must differ from "
                                                              "token #1"),
    (f'{{"{"x" * 1001}": ["a"]}}', "token #1 must be 1..1000"),
]


@pytest.mark.parametrize(("value", "reason"), BAD, ids=[b[1] for b in BAD])
def test_a_bad_value_is_one_line_naming_api_tokens(value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"API_TOKENS": value}, dotenv=None)
    message = str(refused.value)
    assert message.startswith("API_TOKENS: "), message
    assert "\n" not in message and reason in message, message
    assert SECRET not in message and "x" * 50 not in message


def test_a_token_equal_to_api_token_must_have_every_queue() -> None:
    env = {"API_TOKEN": SECRET, "API_TOKENS": json.dumps({"other": ["*"], SECRET: ["a"]})}
    with pytest.raises(ConfigError) as refused:
        load_settings(env, dotenv=None)
    message = str(refused.value)
    assert message.startswith("API_TOKENS: token #2 must differ from API_TOKEN"), message
    assert SECRET not in message
    env["API_TOKENS"] = json.dumps({SECRET: ["*"]})  # the same scope: harmless
    assert load_settings(env, dotenv=None).api_tokens == ((SECRET, ("*",)),)


def test_a_good_value_keeps_its_order_and_hides_its_tokens(tmp_path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("API_TOKENS='{\"tok-a\": [\"a\"], \"tok-b\": [\"b\", \"shared\", \"b\"], "
                      "\"ops\": [\"*\"]}'\n")
    settings = load_settings({}, dotenv=dotenv)
    assert settings.api_tokens == (("tok-a", ("a",)), ("tok-b", ("b", "shared")),
                                   ("ops", ("*",)))
    shown = describe(settings)
    assert shown["api_tokens"] == [["a"], ["b", "shared"], ["*"]]
    assert "tok-" not in repr(shown) and "ops" not in repr(shown)
    assert load_settings({"API_TOKENS": "{}"}, dotenv=None).api_tokens == ()


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_cli_stops_at_start_with_one_line(command: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARIABLES}
    env.update({"API_TOKENS": f'{{"{SECRET}": ["no such queue"]}}',
                "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    done = subprocess.run([sys.executable, "-m", "boundq", command], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "API_TOKENS" in lines[0] and '"no such queue"' in lines[0], lines[0]
    assert SECRET not in done.stderr + done.stdout
