"""workloads (the fleet module) on the lab, through ansible-playbook: a fleet of 50 converges in one process, check
mode writes nothing, a second run changes nothing with an exact request budget, writes on one identity are never
concurrent, the parallelism bound holds, faults on some identities leave the others done and a re-run converges,
Azure's documented throttling is ridden out, a run killed half-way converges with nothing duplicated, and the
fleet comes down again keeping what staying workloads use. State is checked through the emulator's state and the
kubernetes client, never through the module under test."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.integration.runner import VENV_BIN, run_module

pytestmark = pytest.mark.lab

MODULE = "workloads"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
MSI = "/providers/microsoft.managedidentity/userassignedidentities/"


@pytest.fixture(autouse=True)
def clean_lab(lab):
    yield
    lab.clear_faults()
    lab.settings(throttling=0, arm_latency_seconds=0)


def fleet(lab, tag: str, count: int, *, shared: int = 0, namespaces: int = 2) -> list[dict]:
    """``count`` workloads of their own identities, then ``shared`` more on two shared identities."""
    scope = f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/{lab.seed['resource_group']}"
    items = []
    for index in range(count + shared):
        owner = f"id-{tag}-{index:03d}" if index < count else f"id-{tag}-shared-{index % 2}"
        items.append(
            {
                "name": f"{tag}-{index:03d}",
                "namespace": f"{tag}-ns{index % namespaces}",
                "create_namespace": True,
                "service_account": f"sa-{index:03d}",
                "identity": {"name": owner, "resource_group": lab.seed["resource_group"]},
                "grants": [{"role": "Reader", "scope": scope}],
            }
        )
    return items


def arm_requests(lab, since: int) -> list[dict]:
    return [r for r in lab.requests(since) if r["plane"] == "arm"]


def by_kind(requests: list[dict]) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for request in requests:
        path = request["path"].lower()
        if "/federatedidentitycredentials" in path:
            kind = "credentials"
        elif MSI in path or path.endswith("/userassignedidentities"):
            kind = "identities"
        elif "/roleassignments" in path:
            kind = "role_assignments"
        elif "/managedclusters/" in path:
            kind = "cluster"
        else:
            kind = path
        counts[f"{request['method']} {kind}"] += 1
    return counts


def credentials_of(lab, tag: str) -> dict[str, list[dict]]:
    """Federated credentials of the tag's identities, from the emulator's state, by identity name."""
    found: dict[str, list[dict]] = collections.defaultdict(list)
    for key, body in lab.state()["resources"].items():
        if f"{MSI}id-{tag}-" in key and "/federatedidentitycredentials/" in key:
            found[key.split(MSI)[1].split("/")[0]].append(body["properties"])
    return found


def assignments_of(lab, principals: set[str]) -> list[dict]:
    return [
        body["properties"]
        for body in lab.state()["resources"].values()
        if body.get("type") == "Microsoft.Authorization/roleAssignments"
        and body["properties"]["principalId"] in principals
    ]


def test_a_fleet_of_50_converges_in_one_process_then_a_no_op_costs_a_fixed_number_of_lists(lab, cluster, core):
    tag = f"fl{uuid.uuid4().hex[:4]}"
    items = fleet(lab, tag, 40, shared=10)
    args = {"items": items, **cluster, "parallel": 6}

    # Check mode: everything planned, nothing written anywhere.
    marks = (lab.last_seq(), lab.kube_mark())
    check = run_module(MODULE, args, env=lab.env, check=True, diff=True)
    assert check.changed and not check.failed, check.get("msg")
    assert check["summary"]["changed"] == 50 and len(check["diff"]) == 50
    assert lab.writes(marks[0]) == [] and lab.kube_writes(marks[1], include_dry_run=True) == []

    lab.reset_concurrency()
    seq = lab.last_seq()
    first = run_module(MODULE, args, env=lab.env)
    assert first.changed and not first.failed, first.get("msg")
    assert first["summary"] == {
        "workloads": 50,
        "changed": 50,
        "unchanged": 0,
        "failed": 0,
        "actions": first["summary"]["actions"],
    }
    written = arm_requests(lab, seq)
    assert [r for r in written if r["status"] == 409] == []  # no concurrent credential write ever reached Azure
    concurrency = lab.concurrency()
    assert concurrency["planes"]["arm"]["max"] <= 6  # the parallelism bound
    shared = {k: v for k, v in concurrency["max_writes_per_identity"].items() if f"id-{tag}-shared-" in k}
    assert len(shared) == 2 and set(shared.values()) == {1}  # strictly one write at a time per identity

    # Azure's state: one credential per workload, on the right identity, trusting the right subject; one Reader
    # assignment per identity (shared identities once); Kubernetes: every ServiceAccount annotated.
    credentials = credentials_of(lab, tag)
    assert sum(len(v) for v in credentials.values()) == 50
    assert sorted(c["subject"] for c in credentials[f"id-{tag}-shared-0"]) == [
        f"system:serviceaccount:{tag}-ns{i % 2}:sa-{i:03d}" for i in range(40, 50, 2)
    ]
    results = {w["name"]: w for w in first["workloads"]}
    principals = {w["principal_id"] for w in results.values()}
    assert len(principals) == 42
    assert sorted(a["roleDefinitionId"].rsplit("/", 1)[1] for a in assignments_of(lab, principals)) == [READER] * 42
    for name, result in results.items():
        account = core.read_namespaced_service_account(result["service_account"], result["namespace"])
        assert account.metadata.annotations["azure.workload.identity/client-id"] == result["client_id"], name

    # Nothing to do: the documented budget, G + I + S ARM lists + the cluster GET, one token; N Kubernetes lists.
    marks = (lab.last_seq(), lab.kube_mark())
    second = run_module(MODULE, args, env=lab.env)
    assert not second.changed and not second.failed, second.get("msg")
    assert by_kind(arm_requests(lab, marks[0])) == {
        "GET /metadata/endpoints": 1,  # the lab is a custom cloud (AZURE_CLOUD_ENVIRONMENT): its endpoints, once
        "GET cluster": 1,
        "GET identities": 1,  # one resource group
        "GET credentials": 42,  # one list per identity
        "GET role_assignments": 1,  # one scope
    }
    entra = [r for r in lab.requests(marks[0]) if r["plane"] == "entra" and r["method"] == "POST"]
    assert len(entra) == 1  # one sign-in for the whole fleet
    kube = [e for e in lab_kube_requests(lab, marks[1]) if e["user"] == "lab-admin"]  # not the webhook's own
    assert sorted(e["verb"] for e in kube) == ["list", "list"]  # one ServiceAccount list per namespace
    assert second["api_calls"]["msi.federated_identity_credentials.list"] == 42


def lab_kube_requests(lab, since: int) -> list[dict]:
    from tests.lab.kube import controlplane

    return controlplane.audit_requests(lab.workdir / "kube", since)


def test_faults_on_some_identities_fail_those_workloads_only_and_a_rerun_converges(lab, cluster):
    tag = f"ft{uuid.uuid4().hex[:4]}"
    items = fleet(lab, tag, 8)
    broken = {
        f"id-{tag}-001": {"action": "status", "status": 503, "count": 0},  # every attempt: azure-core gives up
        f"id-{tag}-002": {"action": "drop", "count": 0},  # the connection drops every time
        f"id-{tag}-003": {"action": "status", "status": 429, "retry_after": 1, "count": 2},  # throttled, then fine
    }
    for identity, rule in broken.items():
        lab.fault(method="PUT", path=f"userAssignedIdentities/{identity}/federatedIdentityCredentials/", **rule)
    first = run_module(MODULE, {"items": items, **cluster}, env=lab.env)
    assert first.failed
    failed = {w["name"]: w for w in first["workloads"] if w["failed"]}
    assert set(failed) == {f"{tag}-001", f"{tag}-002"}
    assert {w["failed_step"] for w in failed.values()} == {"federated_credential"}
    assert first["msg"].startswith("2 of 8 workloads could not be set up:")
    assert f"{tag}-001 (federated_credential): Failed to create federated credential" in first["msg"]
    assert "503" in first["msg"] or "ServiceUnavailable" in first["msg"]
    done = [w for w in first["workloads"] if not w["failed"]]
    assert len(done) == 6 and all(w["changed"] for w in done)

    lab.clear_faults()
    second = run_module(MODULE, {"items": items, **cluster}, env=lab.env)
    assert second.changed and not second.failed, second.get("msg")
    assert {w["name"] for w in second["workloads"] if w["changed"]} == set(failed)
    credentials = credentials_of(lab, tag)
    assert sorted(len(v) for v in credentials.values()) == [1] * 8  # nothing duplicated
    assert not run_module(MODULE, {"items": items, **cluster}, env=lab.env).changed


def test_azure_throttling_is_ridden_out_by_pacing(lab, cluster):
    """With the lab's model of the managed identity provider's limits on (2 writes/s per subscription, one per 4 s
    per identity), a fleet from scratch gets 429s, paces itself and fails nothing."""
    tag = f"th{uuid.uuid4().hex[:4]}"
    items = fleet(lab, tag, 8, shared=4)
    lab.settings(throttling=1)
    seq = lab.last_seq()
    result = run_module(MODULE, {"items": items, **cluster}, env=lab.env)
    assert not result.failed, result.get("msg")
    assert result["summary"]["changed"] == 12
    throttled = [r for r in lab.requests(seq) if r.get("throttled")]
    assert result["throttled"]["responses"] >= 1 and len(throttled) == result["throttled"]["responses"]
    assert sum(len(v) for v in credentials_of(lab, tag).values()) == 12
    again = run_module(MODULE, {"items": items, **cluster}, env=lab.env)
    assert not again.changed and not again.failed, again.get("msg")


def test_a_run_killed_half_way_converges_on_the_next_with_nothing_duplicated(lab, cluster, tmp_path):
    tag = f"ki{uuid.uuid4().hex[:4]}"
    items = fleet(lab, tag, 12, shared=4)
    lab.settings(arm_latency_seconds=0.15)
    playbook = tmp_path / "fleet.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "connection": "local",
                    "tasks": [{"aks.workload_identity.workloads": {"items": items, **cluster, "parallel": 2}}],
                }
            ]
        )
    )
    from tests.conftest import COLLECTIONS

    env = {
        **os.environ,
        **lab.env,
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }
    seq = lab.last_seq()
    process = subprocess.Popen(
        [str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", "localhost,"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            puts = [r for r in lab.writes(seq) if "/federatedidentitycredentials/" in r["path"].lower()]
            if len(puts) >= 4:
                break
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)  # ansible-playbook and its workers
        # The module runs in a session of its own (Ansible's local connection): kill it too, as a crash would.
        subprocess.run(["pkill", "-KILL", "-f", "AnsiballZ_workloads"], check=False)
    finally:
        process.wait(timeout=30)
    time.sleep(1.5)  # requests already in flight when the client died still complete in Azure
    half = sum(len(v) for v in credentials_of(lab, tag).values())
    time.sleep(1.5)
    assert sum(len(v) for v in credentials_of(lab, tag).values()) == half  # nothing runs on
    assert 4 <= half < 16
    lab.settings(arm_latency_seconds=0)
    rerun = run_module(MODULE, {"items": items, **cluster}, env=lab.env)
    assert rerun.changed and not rerun.failed, rerun.get("msg")
    credentials = credentials_of(lab, tag)
    subjects = [c["subject"] for v in credentials.values() for c in v]
    assert len(subjects) == 16 and len(set(subjects)) == 16
    principals = {w["principal_id"] for w in rerun["workloads"]}
    triples = [(a["scope"].lower(), a["principalId"], a["roleDefinitionId"]) for a in assignments_of(lab, principals)]
    assert len(triples) == len(set(triples)) == 14  # one per identity


def test_the_fleet_comes_down_keeping_what_staying_workloads_use(lab, cluster, core):
    tag = f"td{uuid.uuid4().hex[:4]}"
    items = fleet(lab, tag, 3, shared=4)  # id-…-shared-1 is used by items 3 and 5, shared-0 by 4 and 6
    assert not run_module(MODULE, {"items": items, **cluster}, env=lab.env).failed
    leaving, staying = items[:4], items[4:]  # item 3 leaves shared-1, which item 5 keeps using
    args = {"state": "absent", "items": leaving, "keep_items": items, **cluster}
    marks = (lab.last_seq(), lab.kube_mark())
    check = run_module(MODULE, args, env=lab.env, check=True)
    assert check.changed and lab.writes(marks[0]) == [] and lab.kube_writes(marks[1], include_dry_run=True) == []
    down = run_module(MODULE, args, env=lab.env)
    assert down.changed and not down.failed, down.get("msg")
    identities = {i["name"]: i for i in down["identities"]}
    assert [identities[f"id-{tag}-{i:03d}"]["deleted"] for i in range(3)] == [True] * 3
    kept = identities[f"id-{tag}-shared-1"]
    assert not kept["deleted"] and kept["kept_reason"] == f"kept: still used by workload {tag}-005"
    assert {i["name"]: i["deleted"] for i in check["identities"]} == {n: i["deleted"] for n, i in identities.items()}
    credentials = credentials_of(lab, tag)
    assert set(credentials) == {f"id-{tag}-shared-0", f"id-{tag}-shared-1"}
    assert [c["subject"] for c in credentials[f"id-{tag}-shared-1"]] == [f"system:serviceaccount:{tag}-ns1:sa-005"]
    assert len(credentials[f"id-{tag}-shared-0"]) == 2  # items 4 and 6 were not taken down
    left = {
        a.metadata.name for ns in (f"{tag}-ns0", f"{tag}-ns1") for a in core.list_namespaced_service_account(ns).items
    }
    assert left == {f"sa-{i:03d}" for i in range(4, 7)}
    assert not run_module(MODULE, args, env=lab.env).changed
    assert not run_module(MODULE, {"items": staying, **cluster}, env=lab.env).changed  # the staying ones intact


def test_bad_items_are_refused_before_any_request(lab, cluster):
    tag = f"bd{uuid.uuid4().hex[:4]}"
    items = fleet(lab, tag, 2)
    items[1]["namespace"] = "Not_A_Label"
    items[0]["grants"] = [{"role": "Reader", "scope": "not-an-id"}]
    seq = lab.last_seq()
    result = run_module(MODULE, {"items": items, **cluster}, env=lab.env)
    assert result.failed and result["error_code"] == "InvalidParameter"
    assert f"items[1] ({tag}-001): namespace: must be an RFC 1123 label" in result["msg"]
    assert f"items[0] ({tag}-000): grants[0].scope: must be an ARM resource ID" in result["msg"]
    assert lab.requests(seq) == []
