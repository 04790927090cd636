"""The environment of a child process that runs boundq again (`python -m boundq ...` or
`python -m boundq.<module>`): the flood's server, workers and Locust, the report's drains
and consumers.

Children run in the caller's working directory, as any boundq command does (its .env,
its embedded cluster under .boundq/, its relative paths, its handler modules), and import
the same boundq as the parent. IMPORT_ROOT is the folder that boundq comes from: a
checkout (whose boundq/ links to the source folders) or site-packages. Only a checkout
that is not on the path already goes on PYTHONPATH, in front of the caller's own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import boundq

IMPORT_ROOT = Path(boundq.__file__).resolve().parent.parent


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with `extra` on top, for a boundq child."""
    env = {**os.environ, **(extra or {})}
    if str(IMPORT_ROOT) not in sys.path:  # a checkout; an installed boundq is found anyway
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(IMPORT_ROOT),
                                                          env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
