"""Fixtures of the API tests that the cron tests reuse."""

from __future__ import annotations

from tests.api.conftest import api, module_db_url, shared_api

__all__ = ["api", "module_db_url", "shared_api"]
