"""Extra `boundq worker` processes beside `boundq serve`, started as separate hosts would be.

Each is its own process in its own session and process group, so it has its own owner
id and no signal meant for the runner reaches it. With `proxied`, the last one reaches
PostgreSQL only through the fault proxy the invariant suite uses (core/faultproxy.py),
listening on a Unix socket. When this process may create namespaces (root, unshare(1)),
that worker runs in a network namespace of its own (`unshare --net`): it has no network
at all, not even loopback, and the proxy's socket is its only way to the database. A
`partition` black-holes the proxy for some seconds during the load, then resets the
connections (the network gave up), and the verdict must still be no loss.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from boundq.core import faultproxy
from boundq.core.faultproxy import FaultProxy, ProxyHost
from boundq.loadtests import processes as procs

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_OWNER_PID = re.compile(r"-(\d+)-[0-9a-f]{8}$")


class HostsError(RuntimeError):
    pass


@dataclass
class ExtraWorker:
    label: str
    proc: subprocess.Popen[bytes]
    proxied: bool = False
    netns: bool = False
    exit_code: int | None = None


@dataclass
class Hosts:
    count: int
    proxied: bool
    db_url: str
    run_dir: Path
    env: Callable[[dict[str, str]], dict[str, str]]
    workers: list[ExtraWorker] = field(default_factory=list)
    netns: bool = False
    notes: list[str] = field(default_factory=list)
    _host: ProxyHost | None = None
    _proxy: FaultProxy | None = None
    _socket_dir: Path | None = None
    final_proxy_stats: dict[str, Any] | None = None

    def start(self) -> list[str]:
        lines = []
        for i in range(1, self.count + 1):
            if self.proxied and i == self.count:
                lines.append(self._start_proxied(i))
                continue
            label = f"worker-{i}"
            proc = procs.start_worker(self.env({"DATABASE_URL": self.db_url,
                                                "LOG_LEVEL": "info"}),
                                      self.run_dir / f"{label}.log")
            self.workers.append(ExtraWorker(label, proc))
            lines.append(f"{label}: `boundq worker` pid {proc.pid}, own process group")
        return lines

    def _start_proxied(self, i: int) -> str:
        params = conninfo_to_dict(self.db_url)
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        if host not in LOOPBACK_HOSTS:
            raise HostsError(f"a proxied worker needs PostgreSQL on loopback, not {host!r}")
        self._socket_dir = Path(tempfile.mkdtemp(prefix="boundq-flood-proxy-"))
        socket_path = self._socket_dir / f".s.PGSQL.{port}"

        class UnixFaultProxy(FaultProxy):
            """The same proxy, listening on a Unix socket: the one path that crosses into
            a network namespace with no interfaces."""

            async def start(self) -> int:
                import asyncio

                self._server = await asyncio.start_unix_server(self._accept,
                                                               path=str(socket_path))
                return 0

        async def make() -> Any:
            proxy = UnixFaultProxy(lambda: port)
            await proxy.start()
            return proxy

        self._host = ProxyHost()
        assert self._host is not None
        self._proxy = self._host.run(make())
        url = make_conninfo(self.db_url, host=str(self._socket_dir), port=str(port),
                            sslmode="disable")
        self.netns = procs.can_unshare_net()
        prefix = ["unshare", "--net"] if self.netns else []
        label = f"worker-{i}"
        proc = procs.start_worker(self.env({"DATABASE_URL": url, "LOG_LEVEL": "info"}),
                                  self.run_dir / f"{label}.log", prefix)
        self.workers.append(ExtraWorker(label, proc, proxied=True, netns=self.netns))
        where = ("in a network namespace of its own (unshare --net: no interfaces), "
                 if self.netns else "on this host's network (no network namespace here: "
                 "unshare --net needs root), ")
        self.notes.append(f"{label} ran {where}reaching PostgreSQL only through the fault "
                          "proxy on a Unix socket")
        return f"{label}: `boundq worker` pid {proc.pid}, own process group, {where}" \
               "through the fault proxy"

    def wait_ready(self, give_up: Callable[[], bool], timeout: float = 120) -> None:
        """Until every extra worker has logged "worker started" (connected, claiming)."""
        deadline = time.monotonic() + timeout
        waiting = list(self.workers)
        while waiting and not give_up():
            for w in list(waiting):
                log = self.run_dir / f"{w.label}.log"
                if log.is_file() and "worker started" in log.read_text(errors="replace"):
                    waiting.remove(w)
                elif w.proc.poll() is not None:
                    raise HostsError(f"{w.label} exited with {w.proc.returncode} before it "
                                     f"started: see {log.name}")
            if time.monotonic() > deadline:
                raise HostsError(f"{', '.join(w.label for w in waiting)} did not start "
                                 f"within {timeout:.0f} s")
            time.sleep(0.1)

    # --- faults -----------------------------------------------------------------------
    def blackhole(self) -> None:
        if self._host is not None and self._proxy is not None:
            self._host.set_mode(self._proxy, faultproxy.Mode.BLACKHOLE)

    def heal(self) -> None:
        if self._host is not None and self._proxy is not None:
            self._host.heal(self._proxy, "reset")

    def proxy_stats(self) -> dict[str, Any] | None:
        if self._host is None or self._proxy is None:
            return None
        return self._host.stats(self._proxy)

    # --- the end ----------------------------------------------------------------------
    def check_alive(self) -> list[str]:
        """Extra workers that exited while the flood ran (they should not)."""
        return [f"{w.label} exited with {w.proc.returncode}" for w in self.workers
                if w.proc.poll() is not None]

    def stop(self, tick: Callable[[], None] | None = None) -> None:
        self.final_proxy_stats = self.proxy_stats()
        for w in self.workers:
            w.exit_code = procs.stop(w.proc, timeout=60, tick=tick)
        if self._host is not None:
            if self._proxy is not None:
                self._host.remove(self._proxy)
            self._host.stop()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def owners(self, db_url: str) -> dict[str, dict[str, int]]:
        """Attempts finished per process, from the attempt rows' owner ids (host-pid-
        nonce): each extra worker's pid, and `serve` for every other owner."""
        labels = {w.proc.pid: w.label for w in self.workers}
        out: dict[str, dict[str, int]] = {}
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                rows = conn.execute("SELECT owner, count(*) FROM job_attempts GROUP BY owner"
                                    ).fetchall()
        except psycopg.Error:
            return out  # the attempt table is the core's, not a public interface
        for owner, n in rows:
            found = _OWNER_PID.search(str(owner))
            label = labels.get(int(found.group(1)), "serve") if found else "serve"
            entry = out.setdefault(label, {"attempts": 0, "owner_ids": 0})
            entry["attempts"] += int(n)
            entry["owner_ids"] += 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"extra_workers": [{"label": w.label, "proxied": w.proxied, "netns": w.netns,
                                   "exit_code": w.exit_code} for w in self.workers],
                "network_namespace": self.netns, "notes": self.notes,
                "proxy": self.final_proxy_stats}
