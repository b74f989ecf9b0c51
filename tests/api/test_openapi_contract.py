"""The OpenAPI is the contract: schemathesis fuzzes every documented operation of a live
server (uvicorn on loopback, the tiny index) and checks that no answer is a server error,
and that every status, content type and body is the one the spec documents.

Path parameters are mostly real (the index's model, sources, units, sequences and ranks),
so requests reach the code behind the 404s, and sometimes left as generated, so the 404s
are fuzzed too.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from index_checks import copy_index
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from served import serve

from spyglass.settings import Settings

pytestmark = pytest.mark.api

EXAMPLES_PER_OPERATION = 90
MIN_REQUESTS = 1000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
_calls: list[str] = []


@pytest.fixture(scope="module")
def api_schema(tiny_index, tmp_path_factory):
    # Small caps so generated prompts and generations hit them, and a queue that never
    # refuses (this test calls one request at a time). A copy of the index: the fuzzed
    # label operation writes to it.
    db = copy_index(tiny_index.db, tmp_path_factory.mktemp("api-index"))
    capped = Settings(db=db, max_new_tokens=8, max_prompt_tokens=24, request_timeout=120)
    with serve(capped) as base:
        yield _schema(base, tiny_index.slug)


def _schema(base: str, slug: str):
    """The live server's OpenAPI, with realistic path parameters, and counting calls."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    real = {
        "model": [slug],
        "source": ["0-mlp", "1-mlp"],
        "index": [str(i) for i in (0, 1, 7, 63)],
        "seq_id": ["0", "1", "5"],
        "rank": [0, 1, 4],
    }

    @schema.hook("flatmap_path_parameters")
    def realistic(ctx, path_parameters):
        if not path_parameters:
            return st.just(path_parameters)
        chosen = {}
        for name, generated in path_parameters.items():
            if name in real:
                pick = st.sampled_from(real[name])
                chosen[name] = pick | pick | pick | st.just(generated)
            else:
                chosen[name] = st.just(generated)
        return st.fixed_dictionaries(chosen)

    @schema.hook("after_call")
    def count(ctx, case, response):
        _calls.append(f"{case.method} {case.path}")

    return schema


def test_every_operation_keeps_its_contract(api_schema):
    failures = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case):
            case.call_and_validate(checks=CHECKS)

        try:
            fuzz()
        except Exception as exc:  # noqa: BLE001 - every operation's failure is reported
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_the_fuzz_covered_every_operation_with_enough_requests(api_schema):
    ops = [result.ok() for result in api_schema.get_all_operations()]
    operations = {f"{op.method.upper()} {op.path}" for op in ops}
    assert len(_calls) >= MIN_REQUESTS, f"only {len(_calls)} requests"
    assert {c for c in _calls} >= operations
    # The page twins and the /api operations are all in the contract.
    for path in ("/.json", "/{model}.json", "/{model}/{source}/{index}.json", "/api/{model}/steer"):
        assert any(op.endswith(" " + path) for op in operations), path
