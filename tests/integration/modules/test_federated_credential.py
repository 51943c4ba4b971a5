"""federated_credential on the lab: check mode -> create -> no-op (one list) -> diff -> absent, adoption, near
misses, the limit of 20, bad input, retries (409 from parallel runs, 429, 503, 404 parent) and no secret leaks.
State is verified with an MSI SDK client of the test's own."""

from __future__ import annotations

import concurrent.futures
import uuid

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils import workload_identity as wi
from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

CONCURRENT_CODE = "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"


def arm_requests(lab, since: int) -> list[dict]:
    """ARM requests since ``since``, without the cloud metadata document (read once per run, not an ARM call)."""
    return [r for r in lab.requests(since) if r["plane"] == "arm" and not r["path"].startswith("/metadata/")]


def credential_requests(lab, since: int, method: str | None = None) -> list[dict]:
    return [
        r
        for r in arm_requests(lab, since)
        if "/federatedidentitycredentials" in r["path"].lower() and (method is None or r["method"] == method)
    ]


@pytest.fixture
def identity(lab, msi):
    """A fresh identity made with the SDK (not the module under test); deleted with its credentials afterwards."""
    rg, name = lab.seed["resource_group"], f"id-fic-{uuid.uuid4().hex[:10]}"
    msi.user_assigned_identities.create_or_update(rg, name, {"location": "eastus"})
    yield name
    msi.user_assigned_identities.delete(rg, name)


@pytest.fixture
def issuer() -> str:
    return f"https://oidc.lab.test/{uuid.uuid4()}/"  # AKS issuers end with a slash (azure-behaviour §5)


def listed(lab, msi, identity: str) -> dict[str, tuple]:
    found = msi.federated_identity_credentials.list(lab.seed["resource_group"], identity)
    return {c.name: (c.issuer, c.subject, list(c.audiences)) for c in found}


def test_lifecycle(lab, msi, identity, issuer):
    rg = lab.seed["resource_group"]
    args = {
        "resource_group": rg,
        "identity_name": identity,
        "issuer": issuer,
        "namespace": "orders",
        "service_account": "api",
    }
    name = wi.default_federated_credential_name(issuer, "orders", "api")
    subject = "system:serviceaccount:orders:api"

    seq = lab.last_seq()
    check = run_module("federated_credential", args, env=lab.env, check=True, diff=True)
    assert not check.failed, check.output
    assert check.changed and check["action"] == "create" and check["credential_count"] == 1
    assert check["diff"]["before"] == {} and check["diff"]["after"]["name"] == name
    assert lab.writes(seq) == []
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET"]  # the one list
    assert listed(lab, msi, identity) == {}

    created = run_module("federated_credential", args, env=lab.env)
    assert not created.failed, created.output
    assert created.changed and created["credential_count"] == 1
    assert listed(lab, msi, identity) == {name: (issuer, subject, [wi.DEFAULT_AUDIENCE])}
    assert created["federated_credential"]["id"].lower() == check["federated_credential"]["id"].lower()

    seq = lab.last_seq()
    again = run_module("federated_credential", args, env=lab.env)
    assert not again.failed and not again.changed and again["action"] == "none"
    requests = arm_requests(lab, seq)
    assert len(requests) == 1 and requests[0]["method"] == "GET"
    assert requests[0]["path"].endswith(f"/userAssignedIdentities/{identity}/federatedIdentityCredentials")
    assert again["federated_credential"] == created["federated_credential"]

    # Another cluster's issuer under the same name: updated in place, diff shows the issuer only.
    new_issuer = f"https://oidc.lab.test/{uuid.uuid4()}/"
    moved = run_module(
        "federated_credential",
        {"resource_group": rg, "identity_name": identity, "name": name, "issuer": new_issuer, "subject": subject},
        env=lab.env,
        diff=True,
    )
    assert moved.changed and moved["action"] == "update"
    before, after = moved["diff"]["before"], moved["diff"]["after"]
    assert before["issuer"] == issuer and after["issuer"] == new_issuer
    assert {k: v for k, v in before.items() if k != "issuer"} == {k: v for k, v in after.items() if k != "issuer"}
    assert listed(lab, msi, identity) == {name: (new_issuer, subject, [wi.DEFAULT_AUDIENCE])}

    absent_args = {**args, "issuer": new_issuer, "state": "absent"}
    seq = lab.last_seq()
    absent_check = run_module("federated_credential", absent_args, env=lab.env, check=True, diff=True)
    assert absent_check.changed and absent_check["diff"]["after"] == {}
    assert absent_check["diff"]["before"]["name"] == name
    assert lab.writes(seq) == [] and name in listed(lab, msi, identity)

    absent = run_module("federated_credential", absent_args, env=lab.env)
    assert absent.changed and absent["credential_count"] == 0 and absent["federated_credential"] == {}
    assert listed(lab, msi, identity) == {}

    seq = lab.last_seq()
    gone = run_module("federated_credential", absent_args, env=lab.env)
    assert not gone.failed and not gone.changed
    assert [r["method"] for r in arm_requests(lab, seq)] == ["GET"]


def test_existing_pair_under_another_name_is_adopted(lab, msi, identity, issuer):
    rg = lab.seed["resource_group"]
    subject = "system:serviceaccount:billing:worker"
    body = {"issuer": issuer, "subject": subject, "audiences": [wi.DEFAULT_AUDIENCE]}
    msi.federated_identity_credentials.create_or_update(rg, identity, "made-by-az-cli", body)
    seq = lab.last_seq()
    run = run_module(
        "federated_credential",
        {"resource_group": rg, "identity_name": identity, "name": "fic-wanted", "issuer": issuer, "subject": subject},
        env=lab.env,
    )
    assert not run.failed, run.output
    assert not run.changed and run["action"] == "adopt"
    assert run["federated_credential"]["name"] == "made-by-az-cli"
    assert "made-by-az-cli" in run.output and "[WARNING]" in run.output
    assert lab.writes(seq) == []
    assert set(listed(lab, msi, identity)) == {"made-by-az-cli"}


def test_near_miss_is_warned_about(lab, msi, identity, issuer):
    rg = lab.seed["resource_group"]
    subject = "system:serviceaccount:billing:worker"
    body = {"issuer": issuer.rstrip("/"), "subject": subject, "audiences": [wi.DEFAULT_AUDIENCE]}
    msi.federated_identity_credentials.create_or_update(rg, identity, "no-slash", body)
    run = run_module(
        "federated_credential",
        {"resource_group": rg, "identity_name": identity, "name": "with-slash", "issuer": issuer, "subject": subject},
        env=lab.env,
    )
    assert run.changed
    warning = " ".join(run.output.split())  # the callback wraps long warnings
    assert "'no-slash'" in warning and "trailing slash" in warning and "AADSTS70021" in warning
    assert set(listed(lab, msi, identity)) == {"no-slash", "with-slash"}


def test_limit_of_twenty_fails_before_the_write(lab, msi, identity, issuer):
    rg = lab.seed["resource_group"]
    for i in range(wi.MAX_FEDERATED_CREDENTIALS_PER_IDENTITY):
        body = {"issuer": issuer, "subject": f"system:serviceaccount:ns:sa{i}", "audiences": [wi.DEFAULT_AUDIENCE]}
        msi.federated_identity_credentials.create_or_update(rg, identity, f"fic-{i:02d}", body)
    seq = lab.last_seq()
    run = run_module(
        "federated_credential",
        {
            "resource_group": rg,
            "identity_name": identity,
            "issuer": issuer,
            "namespace": "ns",
            "service_account": "new",
        },
        env=lab.env,
    )
    assert run.failed and run["error_code"] == "FederatedCredentialLimitReached"
    assert "20 of the 20" in run["msg"] and identity in run["msg"]
    assert lab.writes(seq) == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            {"issuer": "http://plain.lab.test/", "namespace": "a", "service_account": "b"},
            "issuer: must be an https URL",
        ),
        (
            {"issuer": "https://x.lab.test/", "namespace": "a", "service_account": "b", "name": "x"},
            "name: must be 3-120",
        ),
        (
            {"issuer": "https://x.lab.test/", "namespace": "a", "service_account": "b", "audiences": ["a", "b"]},
            "audiences: must contain exactly one audience",
        ),
        ({"issuer": "https://x.lab.test/", "subject": "s" * 601, "name": "fic1"}, "subject: must be at most 600"),
    ],
)
def test_bad_input_fails_before_any_request(lab, identity, args, fragment):
    seq = lab.last_seq()
    run = run_module(
        "federated_credential",
        {"resource_group": lab.seed["resource_group"], "identity_name": identity, **args},
        env=lab.env,
    )
    assert run.failed and fragment in run["msg"]
    assert lab.writes(seq) == [] and arm_requests(lab, seq) == []


def test_parallel_runs_on_one_identity_converge(lab, msi, identity, issuer):
    """Azure refuses parallel credential writes on one identity with 409; every run retries until its write lands."""
    rg = lab.seed["resource_group"]
    accounts = [f"sa-{i}" for i in range(6)]
    previous = lab.settings()["fic_write_seconds"]
    seq = lab.last_seq()
    try:
        lab.settings(fic_write_seconds=0.5)
        with concurrent.futures.ThreadPoolExecutor(len(accounts)) as pool:
            runs = list(
                pool.map(
                    lambda account: run_module(
                        "federated_credential",
                        {
                            "resource_group": rg,
                            "identity_name": identity,
                            "issuer": issuer,
                            "namespace": "team",
                            "service_account": account,
                        },
                        env=lab.env,
                    ),
                    accounts,
                )
            )
    finally:
        lab.settings(fic_write_seconds=previous)
    assert [r.failed for r in runs] == [False] * len(accounts), [r.get("msg") for r in runs]
    assert all(r.changed for r in runs)
    found = listed(lab, msi, identity)
    assert sorted(subject for _issuer, subject, _aud in found.values()) == sorted(
        f"system:serviceaccount:team:{a}" for a in accounts
    )
    assert len(found) == len(accounts)  # no duplicates, none lost
    statuses = [r["status"] for r in credential_requests(lab, seq, "PUT")]
    assert statuses.count(201) == len(accounts)
    assert set(statuses) <= {201, 409}
    print(f"409 answers retried: {statuses.count(409)}")


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        # azure-behaviour §4's 409: retried by the module (azure-core treats 409 as final).
        ({"status": 409, "code": CONCURRENT_CODE, "message": "Too many writes.", "count": 2}, [409, 409, 201]),
        # 429 with Retry-After and 503: azure-core's RetryPolicy retries them; the module adds nothing.
        ({"status": 429, "retry_after": 1}, [429, 201]),
        ({"status": 503}, [503, 201]),
        # azure-behaviour §4's 404 for an identity created moments ago: retried by the module.
        (
            {"status": 404, "code": "NotFound", "message": "The parent user-assigned identity doesn't exist."},
            [404, 201],
        ),
    ],
    ids=["409-concurrent", "429-retry-after", "503", "404-parent"],
)
def test_transient_write_failures_converge(lab, msi, identity, issuer, fault, expected):
    rg = lab.seed["resource_group"]
    try:
        lab.fault(method="PUT", path=f"/userAssignedIdentities/{identity}/federatedIdentityCredentials/", **fault)
        seq = lab.last_seq()
        run = run_module(
            "federated_credential",
            {"resource_group": rg, "identity_name": identity, "name": "fic-retry", "issuer": issuer, "subject": "s1"},
            env=lab.env,
        )
    finally:
        lab.clear_faults()
    assert not run.failed, run.output
    assert run.changed and run["credential_count"] == 1
    assert [r["status"] for r in credential_requests(lab, seq, "PUT")] == expected
    assert listed(lab, msi, identity) == {"fic-retry": (issuer, "s1", [wi.DEFAULT_AUDIENCE])}


def test_missing_identity(lab, issuer):
    """Check mode warns and plans; absent is a no-op; present finds the identity missing by reading and writes
    nothing (a PUT would only be answered 404 again and again)."""
    rg = lab.seed["resource_group"]
    args = {"resource_group": rg, "identity_name": f"id-missing-{uuid.uuid4().hex[:6]}", "issuer": issuer}
    args |= {"namespace": "a", "service_account": "b"}
    check = run_module("federated_credential", args, env=lab.env, check=True)
    warning = f"identity_name: managed identity '{args['identity_name']}' in resource group '{rg}' does not exist"
    assert check.changed and warning in " ".join(check.output.split())
    absent = run_module("federated_credential", {**args, "state": "absent"}, env=lab.env)
    assert not absent.failed and not absent.changed
    seq = lab.last_seq()
    present = run_module("federated_credential", {**args, "retry_timeout": 2}, env=lab.env)
    assert present.failed and present["error_code"] == "ResourceNotFound"
    assert present["msg"].startswith(f"identity_name: managed identity '{args['identity_name']}' in resource group")
    assert credential_requests(lab, seq, "PUT") == []


def test_secret_never_appears_in_verbose_output(lab, identity, issuer):
    secret = lab.env["AZURE_SECRET"]
    args = {"resource_group": lab.seed["resource_group"], "identity_name": identity, "issuer": issuer}
    ok = run_module("federated_credential", {**args, "subject": "s", "name": "fic-v"}, env=lab.env, verbosity=3)
    failed = run_module("federated_credential", {**args, "subject": "s", "name": "x"}, env=lab.env, verbosity=3)
    assert ok.changed and failed.failed
    assert secret not in ok.output and secret not in failed.output
