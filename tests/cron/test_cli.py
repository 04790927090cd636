"""`boundq schedules put|get|list|delete`: the CLI mirror of /schedules, run as a real
process against the test's database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.helpers import REPO_ROOT


def boundq(db_url: str, *args: str) -> tuple[int, Any, str]:
    env = {**os.environ, "DATABASE_URL": db_url}
    env.pop("API_TOKEN", None)
    done = subprocess.run([sys.executable, "-m", "boundq", "schedules", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    out = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, out, done.stderr


def test_put_get_list_delete(db_url: str) -> None:
    code, out, err = boundq(db_url, "put", "nightly", "--cron", "30 2 * * *", "--timezone",
                            "Europe/Berlin", "--job", '{"kind": "sleep", "payload": {"ms": 5}}',
                            "--catch-up", "2")
    assert code == 0, err
    assert (out["name"], out["cron"], out["timezone"], out["catch_up"], out["created"]) == (
        "nightly", "30 2 * * *", "Europe/Berlin", 2, True)
    assert out["job"] == {"kind": "sleep", "payload": {"ms": 5}}
    code, out, err = boundq(db_url, "put", "nightly", "--cron", "30 2 * * *", "--timezone",
                            "Europe/Berlin", "--job", "{}")
    assert code == 0 and out["created"] is False and out["catch_up"] == 1, err

    code, out, _ = boundq(db_url, "get", "nightly")
    assert code == 0 and out["name"] == "nightly" and out["recent_ticks"] == []
    code, out, _ = boundq(db_url, "list")
    assert code == 0 and [s["name"] for s in out["schedules"]] == ["nightly"]
    code, out, _ = boundq(db_url, "delete", "nightly")
    assert code == 0 and out == {"deleted": "nightly"}
    code, _, err = boundq(db_url, "get", "nightly")
    assert code == 3 and "no schedule named 'nightly'" in err
    code, _, err = boundq(db_url, "delete", "nightly")
    assert code == 3 and "no schedule" in err


def test_bad_input_exits_2_naming_the_field(db_url: str) -> None:
    cases = [
        (["put", "bad name", "--cron", "* * * * *", "--job", "{}"], "name:"),
        (["put", "s", "--cron", "* * * *", "--job", "{}"], "cron:"),
        (["put", "s", "--cron", "* * * * *", "--timezone", "Mars/Base", "--job", "{}"],
         "timezone:"),
        (["put", "s", "--cron", "* * * * *", "--job", '{"priority": 11}'], "job.priority:"),
        (["put", "s", "--cron", "* * * * *", "--job", "{}", "--catch-up", "0"], "catch_up:"),
        (["put", "s", "--cron", "* * * * *", "--job", "{nope"], "invalid JSON"),
    ]
    for args, said in cases:
        code, out, err = boundq(db_url, *args)
        assert (code, out) == (2, None), (args, err)
        assert said in err and "Traceback" not in err, (args, err)
    code, out, _ = boundq(db_url, "list")
    assert (code, out) == (0, {"schedules": []})
