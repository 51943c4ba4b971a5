"""onboarding_requests on the lab: ServiceAccounts annotated with requests, a policy that allows some of them, and
the whole life of a request - onboarded and proven, refused with Events the requester sees, unchanged, changed
(grants dropped, another identity), withdrawn, deleted - each checked with the test's own clients (the emulator's
log and SDK clients, the apiserver's audit log and the kubernetes client), never through the module."""

from __future__ import annotations

import json
import uuid

import pytest
from azure.mgmt.authorization import AuthorizationManagementClient
from kubernetes import client as k8s

from tests.integration.runner import run_module
from tests.integration.sdk import sdk_client

pytestmark = pytest.mark.lab

MODULE = "onboarding_requests"
IDENTITY, GRANTS = "aks.workload-identity/request-identity", "aks.workload-identity/request-grants"
STATUS, MESSAGE = "aks.workload-identity/onboarding-status", "aks.workload-identity/onboarding-message"
CLIENT_ID = "azure.workload.identity/client-id"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"  # Key Vault Secrets User
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"


@pytest.fixture(scope="module")
def authorization(lab) -> AuthorizationManagementClient:
    return sdk_client(lab, AuthorizationManagementClient)


@pytest.fixture(scope="module")
def world(lab, cluster, core) -> dict:
    tag = f"ob{uuid.uuid4().hex[:4]}"
    group = lab.seed["resource_group"]
    subscription = lab.env["AZURE_SUBSCRIPTION_ID"]
    vault = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.KeyVault/vaults/{lab.seed['rbac_vault']}"
    apps, closed = f"{tag}-apps", f"{tag}-closed"
    for name in (apps, closed):
        core.create_namespace({"metadata": {"name": name}})
    policy = {
        "identity_resource_group": group,
        "scopes": {"app-vault": vault, "app-group": f"/subscriptions/{subscription}/resourceGroups/{group}"},
        "namespaces": {
            apps: {"identities": [f"id-{tag}-*"], "grants": ["Key Vault Secrets User@app-vault", "Reader@app-group"]}
        },
    }
    registry = {"registry_namespace": f"{tag}-registry"}
    return {
        "tag": tag,
        "apps": apps,
        "closed": closed,
        "vault": vault,
        "group_scope": policy["scopes"]["app-group"],
        "args": {**cluster, **registry, "policy": policy},
        "registry": registry["registry_namespace"],
    }


def ask(core, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
    body = {"metadata": {"name": name, "annotations": annotations}}
    try:
        core.create_namespaced_service_account(
            namespace,
            {"metadata": {"name": name, "annotations": {k: v for k, v in annotations.items() if v is not None}}},
        )
    except k8s.ApiException as exc:
        assert exc.status == 409
        core.patch_namespaced_service_account(name, namespace, body)


def annotations(core, namespace: str, name: str) -> dict[str, str]:
    return core.read_namespaced_service_account(name, namespace).metadata.annotations or {}


def events(core, namespace: str, name: str) -> list[tuple[str, str, str]]:
    listed = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return sorted((e.type, e.reason, e.message) for e in listed)


def subjects(msi, group: str, identity: str) -> list[str]:
    return sorted(c.subject for c in msi.federated_identity_credentials.list(group, identity))


def roles_of(authorization, msi, group: str, identity: str, scope: str) -> list[str]:
    principal = msi.user_assigned_identities.get(group, identity).principal_id
    found = authorization.role_assignments.list_for_scope(scope, filter=f"principalId eq '{principal}'")
    return sorted(a.role_definition_id.rsplit("/", 1)[-1] for a in found if a.scope.lower() == scope.lower())


def registry(core, world) -> dict:
    try:
        return {
            k: json.loads(v)
            for k, v in (core.read_namespaced_config_map("onboarding-registry", world["registry"]).data or {}).items()
        }
    except k8s.ApiException as exc:
        assert exc.status == 404
        return {}


def by_account(result) -> dict[str, dict]:
    return {f"{r['namespace']}/{r['service_account']}": r for r in result["requests"]}


def test_bad_policy_is_refused_before_any_request(lab, world):
    seq, mark = lab.last_seq(), lab.kube_mark()
    policy = {
        "identity_resource_group": "rg/bad",
        "scopes": {"Vault": "not-a-scope"},
        "namespaces": {"Apps": {"identities": [], "grants": ["Owner"], "federations": ["magic"]}},
    }
    result = run_module(MODULE, {**world["args"], "policy": policy}, env=lab.env)
    assert result.failed
    for expected in (
        "policy.identity_resource_group",
        "policy.scopes.Vault",
        "policy.namespaces.Apps",
        "policy.namespaces.Apps.identities: must allow at least one identity",
        "policy.namespaces.Apps.grants[0]: must read 'Role name@scope alias'",
        "policy.namespaces.Apps.federations[0]",
    ):
        assert expected in result["msg"], result["msg"]
    assert lab.requests(seq) == [] and lab.kube_requests(mark) == []


def test_lifecycle(lab, world, core, msi, authorization):
    tag, apps, closed, args = world["tag"], world["apps"], world["closed"], world["args"]
    group = lab.seed["resource_group"]
    ident, other = f"id-{tag}-orders", f"id-{tag}-billing"
    ask(core, apps, "orders", {IDENTITY: ident, GRANTS: "Key Vault Secrets User@app-vault"})
    ask(core, apps, "greedy", {IDENTITY: ident, GRANTS: "Owner@app-vault, Reader@nowhere"})
    ask(core, apps, "stranger", {IDENTITY: "id-someone-else"})
    ask(core, closed, "sneaky", {IDENTITY: ident})

    # Check mode: the plan, and no write anywhere (not even a dry run, an annotation or an Event).
    seq, mark = lab.last_seq(), lab.kube_mark()
    preview = run_module(MODULE, args, env=lab.env, check=True)
    assert not preview.failed and preview.changed, preview.get("msg")
    assert lab.writes(seq) == [] and lab.kube_writes(mark, include_dry_run=True) == []
    planned = by_account(preview)
    assert planned[f"{apps}/orders"]["status"] == "pending"
    assert {planned[k]["status"] for k in (f"{apps}/greedy", f"{apps}/stranger", f"{closed}/sneaky")} == {"refused"}

    # Onboard: the allowed request applied and proven; each refusal named, in full, where the requester looks.
    result = run_module(MODULE, args, env=lab.env)
    assert not result.failed and result.changed, result.get("msg")
    seen = by_account(result)
    assert seen[f"{apps}/orders"]["status"] == "onboarded" and seen[f"{apps}/orders"]["proven"] is True
    identity = msi.user_assigned_identities.get(group, ident)
    assert subjects(msi, group, ident) == [f"system:serviceaccount:{apps}:orders"]
    assert roles_of(authorization, msi, group, ident, world["vault"]) == [SECRETS_USER]
    orders = annotations(core, apps, "orders")
    assert orders[CLIENT_ID] == identity.client_id and orders[STATUS] == "onboarded"
    assert [(t, r) for t, r, _m in events(core, apps, "orders")] == [("Normal", "Onboarded")]
    greedy = events(core, apps, "greedy")
    assert [(t, r) for t, r, _m in greedy] == [("Warning", "OnboardingRefused")]
    assert "grant Owner@app-vault is not allowed" in greedy[0][2] and "no scope is called 'nowhere'" in greedy[0][2]
    assert annotations(core, apps, "greedy")[STATUS] == "refused" and CLIENT_ID not in annotations(core, apps, "greedy")
    assert "identity id-someone-else is not allowed" in annotations(core, apps, "stranger")[MESSAGE]
    assert "is not open to self-service onboarding" in events(core, closed, "sneaky")[0][2]
    assert list(registry(core, world)) == [f"{apps}.orders"]
    # Nothing of a refused request was applied: only the allowed one has a credential.
    assert all(s.endswith(":orders") for s in subjects(msi, group, ident))

    # Again: nothing to do - reads only, no Event repeated.
    seq, mark = lab.last_seq(), lab.kube_mark()
    again = run_module(MODULE, args, env=lab.env)
    assert not again.failed and not again.changed, again.get("msg")
    assert lab.writes(seq) == [] and lab.kube_writes(mark, include_dry_run=True) == []
    assert again["api_calls"] == {
        "kubernetes.serviceaccounts.list": 2,  # the cluster's (requests), the namespace's (the fleet's read)
        "kubernetes.configmaps.get": 1,  # the registry
        "containerservice.managed_clusters.get": 1,  # the issuer
        "msi.user_assigned_identities.list_by_resource_group": 1,
        "msi.federated_identity_credentials.list": 1,
        "authorization.role_assignments.list_for_scope": 1,
    }
    assert len(events(core, apps, "greedy")) == 1

    # Grants changed: Reader added, the vault grant dropped - revoked, the chain proven again.
    ask(core, apps, "orders", {IDENTITY: ident, GRANTS: "Reader@app-group"})
    changed = run_module(MODULE, args, env=lab.env)
    assert not changed.failed and changed.changed, changed.get("msg")
    assert by_account(changed)[f"{apps}/orders"]["proven"] is True
    assert roles_of(authorization, msi, group, ident, world["vault"]) == []
    assert roles_of(authorization, msi, group, ident, world["group_scope"]) == [READER]
    assert subjects(msi, group, ident) == [f"system:serviceaccount:{apps}:orders"]

    # Another identity: the old one's trust and grant go (the identity stays: delete_identities is false).
    ask(core, apps, "orders", {IDENTITY: other, GRANTS: "Reader@app-group"})
    moved = run_module(MODULE, args, env=lab.env)
    assert not moved.failed and moved.changed, moved.get("msg")
    assert subjects(msi, group, ident) == [] and roles_of(authorization, msi, group, ident, world["group_scope"]) == []
    assert subjects(msi, group, other) == [f"system:serviceaccount:{apps}:orders"]
    assert annotations(core, apps, "orders")[CLIENT_ID] == msi.user_assigned_identities.get(group, other).client_id

    # A second ServiceAccount on the same identity and grant; then the first withdraws: what the second needs stays.
    ask(core, apps, "invoices", {IDENTITY: other, GRANTS: "Reader@app-group"})
    assert not run_module(MODULE, args, env=lab.env).failed
    ask(core, apps, "orders", {IDENTITY: None, GRANTS: None})
    withdrawn = run_module(MODULE, args, env=lab.env)
    assert not withdrawn.failed and withdrawn.changed, withdrawn.get("msg")
    assert by_account(withdrawn)[f"{apps}/orders"]["status"] == "offboarded"
    assert subjects(msi, group, other) == [f"system:serviceaccount:{apps}:invoices"]
    assert roles_of(authorization, msi, group, other, world["group_scope"]) == [READER]
    orders = annotations(core, apps, "orders")
    assert CLIENT_ID not in orders and orders[STATUS] == "offboarded"
    assert ("Normal", "Offboarded") in [(t, r) for t, r, _m in events(core, apps, "orders")]
    assert sorted(registry(core, world)) == [f"{apps}.invoices"]

    # The last one is deleted (no event is needed: the registry remembers it): its trust and grant go.
    core.delete_namespaced_service_account("invoices", apps)
    deleted = run_module(MODULE, args, env=lab.env)
    assert not deleted.failed and deleted.changed, deleted.get("msg")
    assert subjects(msi, group, other) == [] and roles_of(authorization, msi, group, other, world["group_scope"]) == []
    assert registry(core, world) == {}
    seq, mark = lab.last_seq(), lab.kube_mark()
    settled = run_module(MODULE, args, env=lab.env)
    assert not settled.failed and not settled.changed, settled.get("msg")
    assert lab.writes(seq) == [] and lab.kube_writes(mark, include_dry_run=True) == []


def test_a_change_whose_old_chain_cannot_go_is_held(lab, world, core, msi):
    """Azure refuses to delete the old identity's credential: the new chain is not started, the registry keeps the
    old one, the requester is told; once Azure lets it go, the next run finishes the move."""
    apps, args, tag, group = world["apps"], world["args"], world["tag"], lab.seed["resource_group"]
    old, new = f"id-{tag}-held-a", f"id-{tag}-held-b"
    ask(core, apps, "held", {IDENTITY: old})
    assert not run_module(MODULE, args, env=lab.env).failed
    ask(core, apps, "held", {IDENTITY: new})
    lab.fault(
        method="DELETE",
        path=f"/userAssignedIdentities/{old}/federatedIdentityCredentials/",
        action="status",
        status=403,
        count=10,
    )
    try:
        stuck = run_module(MODULE, args, env=lab.env)
    finally:
        lab.clear_faults()
    assert stuck.failed and "1 of" in stuck["msg"], stuck.get("msg")
    held = by_account(stuck)[f"{apps}/held"]
    assert held["status"] == "failed" and "federated_credential" in held["message"], held
    assert subjects(msi, group, old) == [f"system:serviceaccount:{apps}:held"]
    assert new not in [i.name for i in msi.user_assigned_identities.list_by_resource_group(group)]
    assert registry(core, world)[f"{apps}.held"]["identity"]["name"] == old
    assert annotations(core, apps, "held")[STATUS] == "failed"

    done = run_module(MODULE, args, env=lab.env)
    assert not done.failed, done.get("msg")
    assert subjects(msi, group, old) == [] and subjects(msi, group, new) == [f"system:serviceaccount:{apps}:held"]
    assert registry(core, world)[f"{apps}.held"]["identity"]["name"] == new
    assert annotations(core, apps, "held")[STATUS] == "onboarded"


def test_identity_binding_request(lab, world, core, msi):
    """A namespace allowed identity bindings: the request is bound (one binding, AKS's credential, our RBAC) and
    proven through the AKS token proxy; withdrawn, the ServiceAccount leaves the RBAC and the binding goes."""
    tag, group = world["tag"], lab.seed["resource_group"]
    bound, identity = f"{tag}-bound", f"id-{tag}-bound"
    core.create_namespace({"metadata": {"name": bound}})
    lab.publish_root_ca(bound)  # what kube-controller-manager does in every namespace of a real cluster
    policy = world["args"]["policy"]
    namespaces = {**policy["namespaces"], bound: {"identities": [identity], "federations": ["identity_binding"]}}
    args = {**world["args"], "policy": {**policy, "namespaces": namespaces}}
    ask(core, bound, "batch", {IDENTITY: identity, "aks.workload-identity/request-federation": "identity_binding"})

    result = run_module(MODULE, args, env=lab.env)
    assert not result.failed, result.get("msg")
    seen = by_account(result)[f"{bound}/batch"]
    assert seen["status"] == "onboarded" and seen["proven"] is True, seen
    # No federated credential of its own: the one AKS manages for the identity's bindings.
    assert [c.name for c in msi.federated_identity_credentials.list(group, identity)] == ["aks-identity-binding"]
    rbac = k8s.RbacAuthorizationV1Api(core.api_client)
    client_id = msi.user_assigned_identities.get(group, identity).client_id
    binding = rbac.read_cluster_role_binding(f"azure-wi-identity-binding-{client_id}")
    assert [(s.namespace, s.name) for s in binding.subjects] == [(bound, "batch")]

    ask(core, bound, "batch", {IDENTITY: None, "aks.workload-identity/request-federation": None})
    withdrawn = run_module(MODULE, args, env=lab.env)
    assert not withdrawn.failed, withdrawn.get("msg")
    assert by_account(withdrawn)[f"{bound}/batch"]["status"] == "offboarded"
    with pytest.raises(k8s.ApiException) as gone:
        rbac.read_cluster_role_binding(f"azure-wi-identity-binding-{client_id}")
    assert gone.value.status == 404
