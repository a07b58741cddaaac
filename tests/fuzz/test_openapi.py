"""The fuzz tier (``make test-fuzz``): schemathesis against every process's own OpenAPI document.

For every documented route of every process (the four services and a gateway in front of them):
no 5xx, and no mismatch between the documented schema and what the route accepts (data that
breaks the documented schema is refused with a 4xx). Real processes, with small generation
limits so that schema-valid requests stay cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import negative_data_rejection, not_a_server_error

from tests.gateway.conftest import gateway
from tests.support.procs import Proc, service

pytestmark = pytest.mark.fuzz

CHECKS = [not_a_server_error, negative_data_rejection]
DECODER_ENV = {"MAX_TOKENS_CAP": "8", "DEFAULT_MAX_TOKENS": "4", "CONTEXT_WINDOW": "512"}
FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


ENV = {
    "embedding": {"MAX_INPUT_ITEMS": "16"},
    "classification": {"MAX_INPUT_ITEMS": "16"},
    "llm": DECODER_ENV,
    "generation": DECODER_ENV,
}


class Fleet:
    """Processes started on first use and stopped at the end of the module."""

    def __init__(self, redis: Proc) -> None:
        self.redis = redis
        self.procs: dict[str, Proc] = {}
        self.stack = contextlib.ExitStack()

    def __getitem__(self, name: str) -> Proc:
        if name not in self.procs:
            if name == "gateway":
                pools = {pool: self[pool].url for pool in ENV}
                self.procs[name] = self.stack.enter_context(gateway(pools, self.redis))
            else:
                self.procs[name] = self.stack.enter_context(service(name, ENV[name]))
        return self.procs[name]


@pytest.fixture(scope="module")
def fleet(redis_proc: Proc) -> Iterator[Fleet]:
    f = Fleet(redis_proc)
    with f.stack:
        yield f


def _schema(fleet: Fleet, name: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(fleet[name].url + "/openapi.json")


def fuzz(proc: Proc) -> None:
    """Every operation of ``proc``'s own OpenAPI document, schemathesis-generated cases."""
    # schemathesis' pytest plugin (from_fixture/parametrize) breaks on pytest 9, so the cases
    # come from its hypothesis strategies directly.
    schema = schemathesis.openapi.from_url(proc.url + "/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=proc.url, checks=CHECKS, timeout=60)

        check()


@pytest.mark.parametrize("name", ["embedding", "classification", "llm", "generation", "gateway"])
def test_openapi_of(name: str, fleet: Fleet) -> None:
    fuzz(fleet[name])
