"""Property-based contract test: schemathesis drives every operation of /openapi.json
against a live server (real HTTP, real PostgreSQL) and checks that no response is a 5xx
and that every response matches the documented status codes, media types and schemas."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
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

from boundq.core.pgembed import free_port
from boundq.server.api_process import ApiServer
from boundq.server.app import create_app
from boundq.server.openapi import build_openapi
from tests.api.conftest import TEST_OPTIONS
from tests.conftest import fast_settings

TOKEN = "contract-token"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection,
          ignored_auth, missing_required_header, unsupported_method]
SETTINGS = fast_settings(API_TOKEN=TOKEN)


@pytest.fixture(scope="module")
def live_server(module_db_url: str) -> Iterator[str]:
    """The API in its own thread and event loop: schemathesis' client is synchronous."""
    app = create_app(SETTINGS, module_db_url, options=TEST_OPTIONS)
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


# Module uploads are raw bytes (application/wasm); schemathesis sends them as octet streams.
schemathesis.serializer.alias("application/wasm", "application/octet-stream")
# The document the server serves, built by the same function (the test below checks that).
schema = schemathesis.openapi.from_dict(build_openapi(SETTINGS, TEST_OPTIONS))


def test_served_document_is_the_tested_one(live_server: str) -> None:
    served = httpx.get(f"{live_server}/openapi.json").json()
    assert served == build_openapi(SETTINGS, TEST_OPTIONS)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_matches_its_contract(case: schemathesis.Case[Any], live_server: str) -> None:
    checks = CHECKS
    if case.operation.path == "/jobs/bulk":
        # Partial success is the bulk contract: without ?atomic=true the valid items of a
        # batch are created and each invalid one is reported, so a batch holding an
        # invalid item is rightly answered 201.
        checks = [c for c in CHECKS if c is not negative_data_rejection]
    case.call_and_validate(base_url=live_server, headers={"Authorization": f"Bearer {TOKEN}"},
                           checks=checks)

