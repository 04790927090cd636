"""Fixtures of the API tests that the wasm tests reuse, and the module routes added to the
app the way server/app.py will list them."""

from __future__ import annotations

import pytest

import boundq.server.app as app_module
from boundq.server.modules import MODULE_ROUTES
from tests.api.conftest import module_db_url

__all__ = ["module_db_url", "with_module_routes"]


@pytest.fixture
def with_module_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app() builds its app from ROUTES + the module routes while this is active."""
    monkeypatch.setattr(app_module, "ROUTES", [*app_module.ROUTES, *MODULE_ROUTES])
