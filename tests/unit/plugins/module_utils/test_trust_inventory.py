"""trust_inventory.py (wid_info's readers) with fake SDK clients at the API boundary: request counting per page,
the per-identity credential lists, role names, the per-namespace fallback on 403, a missing CRD, and option checks."""

from __future__ import annotations

import json
import types
import typing as t

import pytest
from kubernetes.client.rest import ApiException

from ansible_collections.aks.workload_identity.plugins.module_utils import trust_inventory

SUB = "11111111-2222-3333-4444-555555555555"
CUSTOM_ROLE = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"


class Pager:
    """An azure-core ItemPaged stand-in: pages of items, each page one request."""

    def __init__(self, *pages):
        self.pages = pages

    def by_page(self):
        return iter(self.pages)


def identity(name, principal):
    return {
        "id": f"/subscriptions/{SUB}/resourcegroups/rg-apps/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
        "name": name,
        "properties": {"clientId": f"client-{name}", "principalId": principal, "tenantId": "t"},
    }


def fake_azure(credentials_by_identity):
    msi = types.SimpleNamespace(
        user_assigned_identities=types.SimpleNamespace(
            list_by_subscription=lambda: Pager([identity("id-a", "p-a")], [identity("id-b", "p-b")]),
            list_by_resource_group=lambda group: Pager([identity("id-a", "p-a")]),
        ),
        federated_identity_credentials=types.SimpleNamespace(
            list=lambda group, name: Pager(credentials_by_identity[name])
        ),
    )
    assignments = [
        {
            "scope": "/s",
            "role_definition_id": "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "principal_id": "P-A",
        },
        {
            "scope": "/s",
            "role_definition_id": f"/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM_ROLE}",
            "principal_id": "p-b",
        },
        {
            "scope": "/s",
            "role_definition_id": "/providers/Microsoft.Authorization/roleDefinitions/other",
            "principal_id": "someone",
        },
    ]
    authorization = types.SimpleNamespace(
        role_assignments=types.SimpleNamespace(list_for_subscription=lambda: Pager(assignments[:2], assignments[2:])),
        role_definitions=types.SimpleNamespace(
            list=lambda scope: Pager(
                [
                    {
                        "id": f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{CUSTOM_ROLE}",
                        "role_name": "Custom Reader",
                    }
                ]
            )
        ),
    )
    return types.SimpleNamespace(msi=msi, authorization=authorization, subscription_id=SUB)


def test_azure_reads_count_pages_and_name_custom_roles():
    calls = trust_inventory.ApiCalls()
    credential = {"name": "fic", "issuer": "https://i/", "subject": "s", "audiences": ["a"]}
    reader = trust_inventory.AzureReader(fake_azure({"id-a": [credential], "id-b": []}), calls)
    identities = reader.identities([])
    assert [(i["name"], i["resource_group"]) for i in identities] == [("id-a", "rg-apps"), ("id-b", "rg-apps")]
    reader.all_credentials(identities)
    assert [len(i["credentials"]) for i in identities] == [1, 0]
    grants = reader.role_assignments({"p-a", "p-b"})
    assert sorted((g["principal_id"].lower(), g["role_name"]) for g in grants) == [
        ("p-a", "Reader"),
        ("p-b", "Custom Reader"),
    ]
    assert calls.as_dict() == {
        "authorization.role_assignments.list_for_subscription": 2,
        "authorization.role_definitions.list": 1,
        "msi.federated_identity_credentials.list": 2,
        "msi.user_assigned_identities.list_by_subscription": 2,
    }


def test_identities_by_resource_group_is_one_list_per_group():
    calls = trust_inventory.ApiCalls()
    trust_inventory.AzureReader(fake_azure({}), calls).identities(["rg-apps", "rg-other"])
    assert calls.as_dict() == {"msi.user_assigned_identities.list_by_resource_group": 2}


class Raw:
    def __init__(self, items):
        self.data = json.dumps({"items": items}).encode()


def item(namespace, name):
    return {"metadata": {"namespace": namespace, "name": name}}


class FakeCore:
    def __init__(self, forbidden):
        self.forbidden = forbidden
        self.namespaced = []

    def list_service_account_for_all_namespaces(self, _preload_content=True):
        if self.forbidden:
            raise ApiException(status=403, reason="Forbidden")
        return Raw([item("a", "x"), item("b", "y"), item("c", "z")])

    def list_namespaced_service_account(self, namespace, _preload_content=True):
        self.namespaced.append(namespace)
        return Raw([item(namespace, "x")])


class FakeCustom:
    def list_cluster_custom_object(self, group, version, plural, _preload_content=True):
        raise ApiException(status=404, reason="Not Found")


def reader(core, namespaces):
    kube = types.SimpleNamespace(core_v1=core, _api=lambda name: FakeCustom())
    return trust_inventory.KubeReader(kube, trust_inventory.ApiCalls(), namespaces)


def test_one_list_across_namespaces_filtered_here():
    kube = reader(FakeCore(forbidden=False), ["a", "c"])
    assert [i["metadata"]["name"] for i in kube.service_accounts()] == ["x", "z"]
    assert kube.calls.as_dict() == {"kubernetes.serviceaccounts.list": 1}


def test_forbidden_cluster_wide_list_falls_back_to_the_namespaces_given():
    core = FakeCore(forbidden=True)
    kube = reader(core, ["a", "c"])
    assert [i["metadata"]["namespace"] for i in kube.service_accounts()] == ["a", "c"]
    assert core.namespaced == ["a", "c"]
    assert kube.calls.as_dict() == {"kubernetes.serviceaccounts.list": 3}


def test_forbidden_without_namespaces_fails():
    with pytest.raises(trust_inventory.WorkloadIdentityError, match="list ServiceAccounts in all namespaces"):
        reader(FakeCore(forbidden=True), []).service_accounts()


def test_missing_pod_identity_crds_mean_none():
    kube = reader(FakeCore(forbidden=False), [])
    assert kube.pod_identity() == {"identities": [], "bindings": []}
    assert kube.calls.as_dict() == {"kubernetes.azureidentities.list": 1, "kubernetes.azureidentitybindings.list": 1}


def test_options_are_checked():
    params = {
        "clusters": [{"resource_group": "rg", "name": "-bad-"}],
        "issuer_urls": ["http://plain"],
        "identity_resource_groups": [],
        "namespaces": ["Upper"],
        "credential_warning_threshold": 0,
    }
    errors = trust_inventory.validate(params)
    assert [e.split(":", maxsplit=1)[0] for e in errors] == [
        "clusters[0].name",
        "issuer_urls[0]",
        "namespaces[0]",
        "credential_warning_threshold",
    ]


def audit_options(**overrides: t.Any) -> dict[str, t.Any]:
    params: dict[str, t.Any] = {
        "clusters": [{"resource_group": "rg-apps", "name": "aks-prod"}],
        "issuer_urls": ["https://issuer.example/"],
        "identity_resource_groups": ["rg-apps"],
        "namespaces": ["orders"],
        "credential_warning_threshold": 16,
    }
    params.update(overrides)
    return params


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"clusters": [{"resource_group": "rg?", "name": "aks"}]}, "clusters[0].resource_group: 'rg?' is not a valid"),
        (
            {"clusters": [{"resource_group": "rg", "name": "aks"}, {"resource_group": "RG", "name": "AKS"}]},
            "clusters[1]: repeats clusters[0]",
        ),
        ({"issuer_urls": ["https://a/", "https://a/"]}, "issuer_urls[1]: repeats issuer_urls[0]"),
        ({"identity_resource_groups": ["rg", "Rg"]}, "identity_resource_groups[1]: repeats"),
        ({"identity_resource_groups": ["bad/group"]}, "identity_resource_groups[0]: 'bad/group' is not a valid"),
        ({"namespaces": ["orders", "orders"]}, "namespaces[1]: repeats namespaces[0]"),
        ({"credential_warning_threshold": 21}, "credential_warning_threshold: must be 1-20, got 21"),
    ],
    ids=["group-name", "same-cluster", "same-issuer", "same-group", "group-pattern", "same-namespace", "threshold"],
)
def test_each_list_entry_is_valid_and_given_once(overrides, expected):
    errors = trust_inventory.validate(audit_options(**overrides))
    assert any(e.startswith(expected) for e in errors), errors


def test_valid_options_have_no_errors():
    assert trust_inventory.validate(audit_options()) == []
    assert trust_inventory.validate(audit_options(clusters=[], issuer_urls=[], identity_resource_groups=[])) == []


# --- Identity bindings and their RBAC ----------------------------------------------------------------------------------
def binding_model(cluster, name, client_id):
    return {
        "id": f"/subscriptions/{SUB}/resourcegroups/rg-apps/providers/Microsoft.ContainerService/managedClusters/"
        f"{cluster}/identityBindings/{name}",
        "name": name,
        "properties": {
            "managedIdentity": {"resourceId": f"/x/{name}", "clientId": client_id},
            "oidcIssuer": {"oidcIssuerUrl": f"https://issuer/{client_id}"},
            "provisioningState": "Succeeded",
        },
    }


def forbidden(*_args):
    from azure.core.exceptions import HttpResponseError

    error = HttpResponseError(message="The client does not have authorization")
    error.status_code = 403
    raise error


def bindings_azure(list_by_managed_cluster):
    return types.SimpleNamespace(
        containerservice=types.SimpleNamespace(
            identity_bindings=types.SimpleNamespace(list_by_managed_cluster=list_by_managed_cluster)
        ),
        subscription_id=SUB,
    )


CLUSTERS = [{"resource_group": "RG-Apps", "name": "aks-a"}, {"resource_group": "rg-apps", "name": "aks-b"}]


def test_identity_bindings_are_one_list_per_cluster_and_carry_their_cluster():
    calls = trust_inventory.ApiCalls()
    azure = bindings_azure(lambda group, cluster: Pager([binding_model(cluster, f"b{cluster[-1]}", "c1")]))
    warnings: list[str] = []
    found = trust_inventory.AzureReader(azure, calls).identity_bindings(CLUSTERS, warnings)
    assert [(b["cluster_resource_group"], b["cluster_name"], b["name"], b["client_id"]) for b in found] == [
        ("RG-Apps", "aks-a", "ba", "c1"),
        ("rg-apps", "aks-b", "bb", "c1"),
    ]
    assert calls.as_dict() == {"containerservice.identity_bindings.list_by_managed_cluster": 2}
    assert warnings == []


@pytest.mark.parametrize(
    "azure, expected",
    [
        (bindings_azure(forbidden), "authorization"),
        (types.SimpleNamespace(containerservice=types.SimpleNamespace(), subscription_id=SUB), ">= 41.3.0"),
    ],
    ids=["forbidden", "old-sdk"],
)
def test_identity_bindings_not_readable_are_a_warning(azure, expected):
    warnings: list[str] = []
    found = trust_inventory.AzureReader(azure, trust_inventory.ApiCalls()).identity_bindings(CLUSTERS, warnings)
    assert found is None
    assert len(warnings) == 1 and expected in warnings[0] and "identity bindings were not judged" in warnings[0]


class FakeRbac:
    def __init__(self, forbidden_kind=None):
        self.forbidden_kind = forbidden_kind

    def _answer(self, kind, items):
        if kind == self.forbidden_kind:
            raise ApiException(status=403, reason="Forbidden")
        return Raw(items)

    def list_cluster_role(self, _preload_content=True, **_kwargs):
        rule = {"apiGroups": ["cid.wi.aks.azure.com"], "resources": ["c1"], "verbs": ["use-managed-identity"]}
        return self._answer("roles", [{"metadata": {"name": "r"}, "rules": [rule]}])

    def list_cluster_role_binding(self, _preload_content=True, **_kwargs):
        binding = {
            "metadata": {"name": "r"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": "a"}],
        }
        return self._answer("bindings", [binding])


def rbac_reader(rbac):
    kube = types.SimpleNamespace(rbac_v1=rbac)
    return trust_inventory.KubeReader(kube, trust_inventory.ApiCalls(), [])


def test_rbac_is_one_list_of_each_kind_normalised():
    kube = rbac_reader(FakeRbac())
    warnings: list[str] = []
    roles, bindings = kube.identity_binding_rbac(warnings)
    assert roles[0]["rules"] == [
        {"api_groups": ["cid.wi.aks.azure.com"], "resources": ["c1"], "verbs": ["use-managed-identity"]}
    ]
    assert bindings[0]["role_ref"]["name"] == "r" and bindings[0]["subjects"][0]["namespace"] == "a"
    assert kube.calls.as_dict() == {"kubernetes.clusterrolebindings.list": 1, "kubernetes.clusterroles.list": 1}
    assert warnings == []


@pytest.mark.parametrize("kind", ["roles", "bindings"])
def test_rbac_not_listable_is_a_warning(kind):
    warnings: list[str] = []
    assert rbac_reader(FakeRbac(forbidden_kind=kind)).identity_binding_rbac(warnings) == (None, None)
    assert len(warnings) == 1 and "who may use identity bindings was not judged" in warnings[0]
