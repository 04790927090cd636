"""Fixtures of the API tests that the wasm tests reuse."""

from __future__ import annotations

from tests.api.conftest import module_db_url

__all__ = ["module_db_url"]
