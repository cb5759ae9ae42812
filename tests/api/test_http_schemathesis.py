"""Property-based tests of the whole HTTP API from its own OpenAPI spec (schemathesis).

Schemathesis reads `/openapi.json` from a real node and sends generated requests, valid ones
and invalid ones, to every operation. Whatever it sends, the node must not answer 5xx, and its
answers must match what the spec documents (status codes, content types, schemas).

One test per operation. The operations are listed from `create_app(None)` at collection; the
test then takes the operation from the spec the node serves (and checks both are the same).
schemathesis's own lazy pytest loader (`schemathesis.pytest.from_fixture`) would do this, but
4.32 fails under pytest 9 (it sets `Function._nodeid`).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ringkv.api.http_serving import create_app
from ringkv.testing.launcher import NodeProcess

MAX_EXAMPLES = 30  # per operation: the whole run stays well under a minute on 2 cores
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SPEC = create_app(None).openapi()
OPERATIONS = [(method.upper(), path) for path, methods in SPEC["paths"].items() for method in methods]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    # A small value limit, so generated values cross it and the 413 answers are exercised.
    node = NodeProcess(tmp_path_factory.mktemp("http-schema") / "n1", max_value_bytes=4096).start()
    yield node
    assert node.stop() == 0, node.log()


@pytest.fixture(scope="module")
def served_schema(node):
    url = f"http://127.0.0.1:{node.http_port}"
    assert httpx.get(f"{url}/openapi.json").json() == SPEC
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_request_makes_the_node_answer_5xx_or_off_spec(served_schema, method, path):
    operation = served_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(checks=CHECKS, timeout=10)

    check()
