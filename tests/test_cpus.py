"""API_CPUS: the CPUs `boundq serve` confines its API process to (core/cpus.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from boundq.core.cpus import api_cpus, named, parse_cpu_list
from boundq.core.supervisor import ChildSpec, _placement

TWO = frozenset({0, 1})


@pytest.mark.parametrize(("text", "normal"), [
    ("auto", "auto"), (" ALL ", "all"), ("1", "1"), ("3,1", "1,3"), ("2-4,0", "0,2,3,4"),
])
def test_a_cpu_list_is_read_in_a_normal_form(text: str, normal: str) -> None:
    assert parse_cpu_list(text) == normal


def test_auto_leaves_the_first_cpu_to_the_workers() -> None:
    assert api_cpus("auto", TWO) == {1}
    assert api_cpus("auto", frozenset({2, 5, 7})) == {5, 7}
    assert api_cpus("auto", frozenset({0})) is None  # one CPU: nothing to leave


def test_all_and_an_explicit_list() -> None:
    assert api_cpus("all", TWO) is None
    assert api_cpus("0", TWO) == {0}
    assert api_cpus("0,1", TWO) == TWO


def test_a_cpu_this_process_may_not_use_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"API_CPUS names CPU 5, .*may use 0,1"):
        api_cpus("1,5", TWO)


def test_serve_refuses_such_a_cpu_before_it_binds() -> None:
    """One line naming the variable, exit 2, before any port is taken."""
    beyond = max(os.sched_getaffinity(0)) + 1
    env = {**os.environ, "API_CPUS": str(beyond),
           "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    done = subprocess.run([sys.executable, "-m", "boundq", "serve"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"API_CPUS names CPU {beyond}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_child_runs_on_the_cpus_of_its_spec() -> None:
    """The supervisor's start-up of a child: its niceness and its CPUs, its own only."""
    ours = frozenset(os.sched_getaffinity(0))
    cpus = frozenset({max(ours)})
    preexec = _placement(ChildSpec("probe", [], cpus=cpus))
    assert preexec is not None
    done = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                          preexec_fn=preexec, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == str(sorted(cpus))
    assert frozenset(os.sched_getaffinity(0)) == ours
    assert _placement(ChildSpec("plain", [])) is None


def test_named_for_the_logs() -> None:
    assert named(frozenset({1})) == "CPU 1"
    assert named(frozenset({3, 2})) == "CPUs 2,3"
    assert named(None) == "all CPUs"
