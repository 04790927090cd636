"""The `/modules` operations against their OpenAPI description (server/modules.py's
module_paths), driven by schemathesis over real HTTP: no 5xx, and every status, media
type and body as documented. The same document fragment is what /openapi.json will carry
once the routes are wired into the app."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

import boundq.server.app as app_module
from boundq.core.pgembed import free_port
from boundq.server.api_process import ApiServer
from boundq.server.modules import MODULE_ROUTES, module_paths
from boundq.server.openapi import build_openapi
from tests.api.conftest import TEST_OPTIONS
from tests.conftest import fast_settings

TOKEN = "contract-token"
SETTINGS = fast_settings(API_TOKEN=TOKEN)
# The checks of tests/api/test_schemathesis.py.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection,
          ignored_auth, missing_required_header, unsupported_method]


def document() -> dict[str, Any]:
    doc = build_openapi(SETTINGS, TEST_OPTIONS)
    doc["paths"] = module_paths(auth_writes=True, auth_reads=False)
    return doc


@pytest.fixture(scope="module")
def live_server(module_db_url: str) -> Iterator[str]:
    routes = [*app_module.ROUTES, *MODULE_ROUTES]
    original = app_module.ROUTES
    app_module.ROUTES = routes  # as server/app.py will list them
    try:
        app = app_module.create_app(SETTINGS, module_db_url, options=TEST_OPTIONS)
    finally:
        app_module.ROUTES = original
    port = free_port()
    server = ApiServer(uvicorn.Config(app, host="127.0.0.1", port=port, http="httptools",
                                      lifespan="on", log_config=None, access_log=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


# A module body is raw bytes: send generated ones as they are (most are not wasm: a 422).
schemathesis.serializer.alias("application/wasm", "application/octet-stream")
schema = schemathesis.openapi.from_dict(document())


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_module_operations_match_their_contract(case: schemathesis.Case[Any],
                                                live_server: str) -> None:
    case.call_and_validate(base_url=live_server, headers={"Authorization": f"Bearer {TOKEN}"},
                           checks=CHECKS)
