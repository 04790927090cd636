"""Database administration shared by the flood, the benchmarks, the reports and the tests:
URLs of other databases on the same server, fresh and cloned databases, dropping them.

Names are quoted as identifiers (psycopg.sql), never formatted into the statement.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

ADMIN_DATABASE = "postgres"


def database_url(base: str, name: str) -> str:
    """The server of `base` (a URL or conninfo string), database `name`, as a
    postgresql:// URL: asyncpg (the peers) and Locust's children need a URL."""
    params = {k: str(v) for k, v in conninfo_to_dict(base).items()}
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = params.pop("host", "127.0.0.1")
    port = params.pop("port", "5432")
    params.pop("dbname", None)
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{auth}{host}:{port}/{quote(name, safe='')}{query}"


def admin_url(base: str) -> str:
    return database_url(base, ADMIN_DATABASE)


def fresh_database(base: str, name: str, template: str | None = None) -> str:
    """Drop `name` if it exists (closing its sessions), create it empty or as a copy of
    `template`, and return its URL."""
    with psycopg.connect(admin_url(base), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        if template is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)))
    return database_url(base, name)


def drop_database(base: str, name: str) -> None:
    with psycopg.connect(admin_url(base), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
