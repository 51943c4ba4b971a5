"""issuer_rotation on the lab, from an old issuer (a retired cluster's, given as a URL) to the lab cluster's: the new
credential is added beside the old one, the new chain is proven with a real token of the new cluster, and only then,
asked to, the old credential goes; a run stopped after the first step resumes; check mode plans every step and
writes nothing; the 20-credential budget counts the overlap. State is read with the test's own SDK client."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.runner import run_module

pytestmark = pytest.mark.lab

MODULE = "issuer_rotation"


def old_issuer(lab) -> str:
    return f"https://eastus.oic.prod-aks.azure.com/{lab.env['AZURE_TENANT']}/{uuid.uuid4()}/"


def planted(lab, msi, tag: str, count: int, issuer: str) -> list[dict]:
    """``count`` workloads on one identity, as the old cluster left them: the identity with a credential for the old
    issuer per ServiceAccount (named as its item says), a Reader grant; nothing on the new cluster yet."""
    group = lab.seed["resource_group"]
    identity = f"id-{tag}"
    msi.user_assigned_identities.create_or_update(group, identity, {"location": "eastus"})
    scope = f"/subscriptions/{lab.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/{group}"
    items = []
    for index in range(count):
        account = f"sa-{index}"
        msi.federated_identity_credentials.create_or_update(
            group,
            identity,
            f"legacy-{index}",
            {
                "properties": {
                    "issuer": issuer,
                    "subject": f"system:serviceaccount:{tag}:{account}",
                    "audiences": ["api://AzureADTokenExchange"],
                }
            },
        )
        items.append(
            {
                "name": f"{tag}-{index}",
                "namespace": tag,
                "create_namespace": True,
                "service_account": account,
                "credential_name": f"legacy-{index}",
                "identity": {"name": identity, "resource_group": group},
                "grants": [{"role": "Reader", "scope": scope}],
            }
        )
    return items


def credentials(lab, msi, tag: str) -> dict[str, str]:
    return {c.name: c.issuer for c in msi.federated_identity_credentials.list(lab.seed["resource_group"], f"id-{tag}")}


def test_make_before_break_with_a_resumed_run(lab, cluster, msi):
    tag = f"rot{uuid.uuid4().hex[:4]}"
    old = old_issuer(lab)
    items = planted(lab, msi, tag, 3, old)
    scope = items[0]["grants"][0]["scope"]
    args = {
        "items": items,
        "old_issuer_url": old,
        "new_cluster_resource_group": cluster["cluster_resource_group"],
        "new_cluster_name": cluster["cluster_name"],
        "arm_resource_id": scope,
    }

    # Check mode: the whole plan (add, and retire once proven), no write anywhere, no token.
    marks = (lab.last_seq(), lab.kube_mark())
    preview = run_module(MODULE, {**args, "retire_old": True}, env=lab.env, check=True, diff=True)
    assert preview.changed and not preview.failed, preview.get("msg")
    assert lab.writes(marks[0]) == [] and lab.kube_writes(marks[1], include_dry_run=True) == []
    steps = [[a["step"] for a in w["actions"]] for w in preview["workloads"]]
    assert all("federated_credential" in s and "retire" in s for s in steps), steps
    assert {w["proof"]["status"] for w in preview["workloads"]} == {"skipped"}

    # Step 1 only (as if the run had stopped there): the new credential beside the old one.
    first = run_module(MODULE, {**args, "prove": False}, env=lab.env)
    assert first.changed and not first.failed, first.get("msg")
    assert {w["stage"] for w in first["workloads"]} == {"overlap"}
    found = credentials(lab, msi, tag)
    assert sorted(found.values()).count(old) == 3 and len(found) == 6
    new = first["new_issuer_url"]
    assert sorted(set(found.values())) == sorted({old, new})

    # The resumed run proves the new chains (a token of the new cluster each) and retires the old credentials.
    done = run_module(MODULE, {**args, "retire_old": True}, env=lab.env)
    assert done.changed and not done.failed, done.get("msg")
    for workload in done["workloads"]:
        assert workload["stage"] == "retired" and workload["retired"], workload
        assert workload["proof"]["status"] == "passed", workload["proof"]
    assert set(credentials(lab, msi, tag).values()) == {new}
    assert len(credentials(lab, msi, tag)) == 3

    # Once more: nothing to do, no write.
    seq = lab.last_seq()
    again = run_module(MODULE, {**args, "retire_old": True}, env=lab.env)
    assert not again.changed and not again.failed, again.get("msg")
    assert {w["stage"] for w in again["workloads"]} == {"retired"}
    assert lab.writes(seq) == []


def test_the_overlap_must_fit_into_20_credentials(lab, cluster, msi):
    tag = f"rot{uuid.uuid4().hex[:4]}"
    old = old_issuer(lab)
    items = planted(lab, msi, tag, 11, old)
    seq = lab.last_seq()
    refused = run_module(
        MODULE,
        {
            "items": items,
            "old_issuer_url": old,
            "new_cluster_resource_group": cluster["cluster_resource_group"],
            "new_cluster_name": cluster["cluster_name"],
        },
        env=lab.env,
    )
    assert refused.failed and "would hold 22 federated credentials" in refused["msg"], refused.get("msg")
    assert "identity_binding" in refused["msg"]
    assert lab.writes(seq) == []


def test_the_same_issuer_twice_is_refused_before_any_request(lab, cluster):
    issuer = "https://eastus.oic.prod-aks.azure.com/t/x/"
    seq = lab.last_seq()
    refused = run_module(
        MODULE,
        {
            "items": [
                {
                    "name": "a",
                    "namespace": "a",
                    "service_account": "a",
                    "identity": {"name": "id-a", "resource_group": "rg"},
                }
            ],
            "old_issuer_url": issuer,
            "new_issuer_url": issuer,
            "new_cluster_resource_group": cluster["cluster_resource_group"],
            "new_cluster_name": cluster["cluster_name"],
        },
        env=lab.env,
    )
    assert refused.failed and "new_issuer_url: is the old issuer" in refused["msg"]
    assert lab.requests(seq) == []
