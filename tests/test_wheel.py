"""The wheel, installed outside the checkout: built from the sources, installed with the
`load` extra into a fresh virtualenv, and used from a directory of its own with nothing of
the checkout on the path: `boundq --help`, the public API (typed), `boundq enqueue`, and a
short `boundq flood` whose verdict passes.

The wheel is built once per module and installed once, with uv (`uv build`, `uv pip
install` into a venv made by the standard library's venv): the same standard wheel and
metadata pip installs, resolved against the package registry, but its dependencies come
hard-linked from uv's cache after the first run (pip unpacked the ~290 MB of the `load`
extra anew each time: 20-40 s of the test's minute on a busy 2-core machine).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from boundq.core.config import ENV_VARIABLES
from tests.conftest import PgCluster
from tests.helpers import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EXTRAS = "load"  # what `boundq flood` and `boundq report` need (pyproject.toml)
PUBLIC = ("handler", "JobContext", "PermanentJobError", "Client", "Worker", "create_app",
          "Settings", "load_settings")
SOURCE_PACKAGES = ("core", "server", "loadtests", "reports")


def _run(argv: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, **kwargs)
    assert done.returncode == 0, (argv, done.stdout[-3000:], done.stderr[-3000:])
    return done


def _copy_sources(dest: Path) -> None:
    """The files the wheel is built from (git's view: tracked and new, minus ignored), so
    the build's own output (build/, *.egg-info) never lands in the checkout. boundq/'s
    links to the source folders are copied as links."""
    links = [p for p in (REPO_ROOT / "boundq").iterdir() if p.is_symlink()]
    roots = ["pyproject.toml", "README.md", "boundq",
             *(os.path.relpath(p.resolve(), REPO_ROOT) for p in links)]
    listed = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z",
                   "--", *roots], 60, cwd=REPO_ROOT).stdout.split("\0")
    for name in filter(None, listed):
        src, dst = REPO_ROOT / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_file():  # a tracked file deleted in the work tree is not listed here
            shutil.copy2(src, dst)


def _uv() -> str:
    from uv import find_uv_bin  # the `test` extra

    return str(find_uv_bin())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("sources")
    out = tmp_path_factory.mktemp("dist")
    _copy_sources(src)
    # An isolated build with pyproject's build-system requirements, as pip's.
    _run([_uv(), "build", "--quiet", "--wheel", "--out-dir", str(out), str(src)], 600)
    (built,) = out.glob("boundq-*.whl")
    return built


@dataclass(frozen=True)
class Installed:
    venv: Path
    cwd: Path  # a directory of its own, outside the checkout
    env: dict[str, str]  # no PYTHONPATH, no boundq settings of the caller

    def run(self, *argv: str, timeout: float = 120, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        return _run([str(self.venv / "bin" / argv[0]), *argv[1:]], timeout, cwd=self.cwd,
                    env={**self.env, **(env or {})})

    @property
    def package(self) -> Path:
        found = list(self.venv.glob("lib/python*/site-packages/boundq"))
        assert len(found) == 1, found
        return found[0]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], 120)
    _run([_uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
          f"{wheel}[{EXTRAS}]"], 840)
    cwd = tmp_path_factory.mktemp("outside")
    assert not cwd.resolve().is_relative_to(REPO_ROOT.resolve())
    drop = {*ENV_VARIABLES, "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME",
            "PROMETHEUS_MULTIPROC_DIR", "BOUNDQ_HANDLERS"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("FLOOD_")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    yield Installed(venv, cwd, env)


# --- the wheel's contents -------------------------------------------------------------------
def test_wheel_holds_the_package_data_and_only_the_boundq_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        top_level = zf.read(f"{dist_info}/top_level.txt").decode().split()
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    assert {n.split("/")[0] for n in names} == {"boundq", dist_info}
    assert top_level == ["boundq"]  # no top-level core/, server/, ...
    for folder in SOURCE_PACKAGES:  # every module of the source folders is in the package
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert f"boundq/{path.relative_to(REPO_ROOT).as_posix()}" in names, path
    data = [*sorted((REPO_ROOT / "core" / "sql").glob("*.sql")),
            *sorted((REPO_ROOT / "core" / "migrations").glob("*.sql"))]
    assert len(data) > 4
    for path in data:
        assert f"boundq/{path.relative_to(REPO_ROOT).as_posix()}" in names, path
    for name in ("boundq/py.typed", "boundq/loadtests/locustfile.py",
                 "boundq/loadtests/step.py", "boundq/__main__.py"):
        assert name in names
    assert "boundq = boundq.cli:main" in entry_points
    assert "Provides-Extra: load" in metadata
    assert any(line.startswith("Requires-Dist: locust") and 'extra == "load"' in line
               for line in metadata.splitlines())


# --- installed, used from outside the checkout ----------------------------------------------
def test_boundq_help_from_outside(installed: Installed) -> None:
    top = installed.run("boundq", "--help").stdout
    for command in ("db", "migrate", "worker", "enqueue", "serve", "flood", "report"):
        assert command in top
    assert "--calibration-seconds" in installed.run("boundq", "flood", "--help").stdout


PUBLIC_API_SCRIPT = """
import asyncio, importlib.util, json, os, sys
from pathlib import Path

import psycopg

import boundq
from boundq import *  # noqa: F403 - every public name imports

async def main():
    client = boundq.Client()
    url = os.environ["DATABASE_URL"]
    async with await psycopg.AsyncConnection.connect(url) as conn:
        try:
            async with conn.transaction():  # the caller's own transaction, rolled back
                gone = await client.enqueue(conn, "rolled back", payload={"n": 1})
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        async with conn.transaction():
            kept = await client.enqueue(conn, "kept", payload={"n": 2})
        got = await client.get(conn, kept["id"])
        cancelled = await client.cancel(conn, kept["id"])
        await conn.commit()
        cur = await conn.execute("SELECT count(*) FROM jobs WHERE id = %s", (gone["id"],))
        (rolled_back_rows,) = await cur.fetchone()
    return {"got": got["name"], "cancelled": cancelled["status"],
            "rolled_back_rows": rolled_back_rows}

package = Path(boundq.__file__).parent
print(json.dumps({
    "file": boundq.__file__,
    "all": sorted(boundq.__all__),
    "callable": {name: callable(getattr(boundq, name)) for name in boundq.__all__},
    "classes": [name for name in boundq.__all__ if isinstance(getattr(boundq, name), type)],
    "py_typed": (package / "py.typed").is_file(),
    "sys_path": sys.path,
    "top_level": {name: importlib.util.find_spec(name) is not None
                  for name in ("core", "server", "loadtests", "reports")},
    "client": asyncio.run(main()),
}))
"""


def test_public_api_is_the_installed_one_typed_and_works(installed: Installed,
                                                         db_url: str) -> None:
    out = installed.run("python", "-c", PUBLIC_API_SCRIPT, env={"DATABASE_URL": db_url})
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).resolve().is_relative_to(installed.venv.resolve()), found["file"]
    repo = str(REPO_ROOT.resolve())
    assert not [p for p in found["sys_path"] if p and Path(p).resolve().is_relative_to(repo)]
    assert set(found["all"]) == set(PUBLIC)
    assert found["callable"] == dict.fromkeys(PUBLIC, True)
    assert set(found["classes"]) == {"Client", "JobContext", "PermanentJobError", "Settings",
                                     "Worker"}
    assert found["py_typed"] is True
    assert found["top_level"] == dict.fromkeys(SOURCE_PACKAGES, False)
    assert found["client"] == {"got": "kept", "cancelled": "cancelled", "rolled_back_rows": 0}


def test_enqueue_from_outside(installed: Installed, db_url: str) -> None:
    out = installed.run("boundq", "enqueue", "--kind", "noop", "--count", "3",
                        env={"DATABASE_URL": db_url})
    created = json.loads(out.stdout.strip().splitlines()[-1])
    assert created["created"] == 3
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*), min(id), max(id) FROM jobs WHERE kind = 'noop' "
                           "AND status = 'new'").fetchone()
    assert row == (3, created["first_id"], created["last_id"])


def test_short_flood_from_outside_passes(installed: Installed, db_url: str) -> None:
    # The caller's .env and a relative --out (the default, reports/runs) are the caller's:
    # the flood, its server and Locust all run in the caller's directory.
    (installed.cwd / ".env").write_text("MAX_CONCURRENT_JOBS=3\n")
    try:
        out = installed.run(
            "boundq", "flood", "--scenario", "create", "--users", "2", "--time", "2",
            "--job-ms", "0", "--calibration-seconds", "0", "--drain-timeout", "120",
            "--refusal-p99-ms", "0", "--accepted-p99-ms", "0",  # latency: a benchmark's job
            timeout=420, env={"DATABASE_URL": db_url})
    finally:
        (installed.cwd / ".env").unlink()
    assert "PASSED: lost = 0" in out.stdout, out.stdout[-3000:]
    assert "door probe (one client, 20 creates/s" in out.stdout, out.stdout[-3000:]
    (run_dir,) = (installed.cwd / "reports" / "runs").iterdir()
    for name in ("run.json", "summary.md", "locust_stats.csv", "server.log",
                 "server_metrics.prom"):
        assert (run_dir / name).is_file(), name
    run = json.loads((run_dir / "run.json").read_text())
    assert run["result"]["passed"] is True
    assert run["verdict"]["lost"] == 0 and run["verdict"]["acknowledged"] > 0
    assert run["settings"]["max_concurrent_jobs"] == 3
    high_water = [float(line.split()[-1])
                  for line in (run_dir / "server_metrics.prom").read_text().splitlines()
                  if line.startswith("boundq_permits_high_water ")]
    assert high_water and high_water[0] <= 3  # the server read the caller's .env too
    assert not (installed.package / "reports" / "runs").exists()  # nothing in the package


# Imported by each `boundq worker` the report starts, when the caller's .env names it.
CALLER_HANDLERS = """
import os, sys

with open(os.environ["REPORT_CHILDREN"], "a") as out:
    out.write(repr({"cwd": os.getcwd(), "sys_path": sys.path}) + "\\n")
"""

# One point of `boundq report`'s concurrency sweep, as reports/sweep.py measures it (the
# whole command adds a minute of pandas and matplotlib on a busy machine, not children).
REPORT_POINT_SCRIPT = """
import json, os
from boundq.reports.drain_run import prepare
from boundq.reports.points import drain_boundq

url = prepare(os.environ["BASE_URL"], "boundq", 50)
print(json.dumps(drain_boundq(url, 50, {"MAX_CONCURRENT_JOBS": "5"})))
"""


def test_report_from_outside_runs_its_children_in_the_callers_directory(
        installed: Installed, pg_cluster: PgCluster, tmp_path: Path) -> None:
    """A drain of `boundq report` runs `boundq worker` as a child: in the caller's directory
    (the caller's .env, whose BOUNDQ_HANDLERS names a module there), importing the
    installed boundq. Before, the children ran in site-packages/boundq with it on
    PYTHONPATH: no caller's .env, no caller's modules."""
    children = tmp_path / "children.txt"
    (installed.cwd / "caller_jobs.py").write_text(CALLER_HANDLERS)
    (installed.cwd / ".env").write_text("BOUNDQ_HANDLERS=caller_jobs\n")
    try:
        out = installed.run("python", "-c", REPORT_POINT_SCRIPT, timeout=300,
                            env={"BASE_URL": pg_cluster.url("postgres"),
                                 "REPORT_CHILDREN": str(children)})
    finally:
        (installed.cwd / ".env").unlink()
        (installed.cwd / "caller_jobs.py").unlink()
    point = json.loads(out.stdout.strip().splitlines()[-1])
    assert point["jobs_per_s"] > 0, point
    assert children.is_file(), "the report's worker did not read the caller's .env"
    seen = [ast.literal_eval(line) for line in children.read_text().splitlines()]
    assert len(seen) == 1, seen  # one drain, one `boundq worker`
    assert Path(seen[0]["cwd"]) == installed.cwd
    assert str(installed.package) not in seen[0]["sys_path"]
    assert not (installed.package / ".boundq").exists()
