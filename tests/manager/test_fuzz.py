"""The published OpenAPI schema fuzzed with schemathesis against a real manager: never a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from vmagent.manager.testing import new_vm  # noqa: E402

pytestmark = pytest.mark.slow
VM_ROUTES = ("/heartbeat", "/claim", "/halting", "/result")


@pytest.fixture(scope="module")
def target(start, db_kind):
    """A plain-HTTP manager with one registered VM, for the fuzzer, on SQLite and on PostgreSQL."""
    manager = start(db_kind, tls=False)
    return manager, new_vm(manager)


def _operations(url):
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    found = []
    for result in schema.get_all_operations():
        found.append(result.ok())
    return found


def test_no_generated_request_gets_a_server_error(target):
    """Every generated request, as admin or as the VM itself, answers below 500 with a JSON detail on errors."""
    manager, vm = target
    operations = _operations(manager.url)
    assert len(operations) >= 15
    statuses = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case):
            token = manager.admin_token
            if case.path.endswith(VM_ROUTES):
                token = vm["token"]
                case.path_parameters = dict(case.path_parameters or {}, vm_id=vm["vm_id"])
            response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=30)
            where = f"{case.method} {case.formatted_path}"
            statuses.append(response.status_code)
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
            if response.status_code >= 400 and case.path.startswith("/api/"):
                assert isinstance(response.json().get("detail"), str), where

        check()
    # The fuzzer reached the routes' real work, not only their refusals.
    assert len(statuses) > 100 and sum(200 <= s < 300 for s in statuses) > 20, sorted(set(statuses))
