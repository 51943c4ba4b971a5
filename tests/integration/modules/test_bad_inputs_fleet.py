"""Bad input to the fleet modules (workloads, workloads_verify), the rules every module shares (values as written,
authentication options), and the same refusals through ansible-playbook: refused before the first request, naming
the option (for items: the item, the key and the rule), with nothing sent to Azure or Kubernetes.

The modules run in this process (tests/integration/inprocess.py) with real HTTP to the lab; the emulator's request
log and the apiserver's audit log say what was sent. The last test runs the same kind of cases as a user does, one
playbook through ansible-playbook, to show the controller hands the modules the values as written.
"""

from __future__ import annotations

import copy
import json
import typing as t

import pytest

from tests.integration.inprocess import run_inprocess
from tests.integration.runner import run_module

RG = "rg-wid-lab"
ISSUER = "https://oidc.lab.test/tenant/cluster/"


def _item(**overrides: t.Any) -> dict[str, t.Any]:
    item = {
        "name": "orders",
        "namespace": "bad-inputs",
        "service_account": "orders-api",
        "identity": {"name": "id-bad-inputs-fleet", "resource_group": RG},
    }
    return {**item, **overrides}


def _fleet(**overrides: t.Any) -> dict[str, t.Any]:
    return {"items": [_item()], "issuer_url": ISSUER, **overrides}


# (module, arguments, what the message must say)
FLEET_CASES = [
    # the module's own options
    ("workloads", _fleet(parallel=0), "parallel: must be 1-32"),
    ("workloads", _fleet(parallel=True), "parallel: must be a number, got a boolean"),
    ("workloads", _fleet(issuer_url="http://oidc.lab.test/x/"), "issuer_url: must be an https URL"),
    ("workloads", _fleet(issuer_url=ISSUER + " "), "issuer_url: must not start or end with whitespace"),
    ("workloads", _fleet(issuer_url=""), "issuer_url: must not be empty"),
    ("workloads", _fleet(tenant_id="contoso"), "tenant_id: must be a GUID"),
    ("workloads", _fleet(default_location="west-europe"), "default_location: must be an Azure region name"),
    ("workloads", _fleet(cluster_resource_group=RG, cluster_name="aks wid"), "cluster_name: must be 1-63"),
    ("workloads", _fleet(cluster_name="aks-wid-lab"), "parameters are required together"),
    (
        "workloads",
        _fleet(keyvaults=[{"vault_name": "kv-wid-rbac", "resource_group": "rg.", "role": "Key Vault Secrets User"}]),
        "keyvaults[0].resource_group:",
    ),
    (
        "workloads",
        _fleet(keyvaults=[{"vault_name": "kv--x", "resource_group": RG}]),
        "keyvaults[0].vault_name:",
    ),
    (
        "workloads",
        _fleet(keyvaults=[{"vault_name": "kv-wid-rbac", "resource_group": RG, "secret_permissions": ["read"]}]),
        "keyvaults[0].secret_permissions: unknown permissions",
    ),
    ("workloads", _fleet(keyvaults=[{"vault_name": True, "resource_group": RG}]), "keyvaults[0].vault_name: must be"),
    # the items: as written, then each domain rule, named by item and key
    ("workloads", _fleet(items=[]), "items: must list at least one workload"),
    ("workloads", _fleet(items=["orders"]), "Elements value for option 'items' is of type str"),
    ("workloads", _fleet(items=[_item(name=True)]), "items[0]: name: must be a string, got a boolean"),
    ("workloads", _fleet(items=[_item(namespace="")]), "items[0] (orders): namespace: must not be empty"),
    ("workloads", _fleet(items=[_item(namespace="Bad")]), "items[0] (orders): namespace: must be an RFC 1123"),
    (
        "workloads",
        _fleet(items=[_item(service_account="orders_api")]),
        "items[0] (orders): service_account: must be an RFC 1123 subdomain",
    ),
    (
        "workloads",
        _fleet(items=[_item(identity={"name": "id", "resource_group": RG})]),
        "items[0] (orders): identity.name: must be 3-128",
    ),
    (
        "workloads",
        _fleet(items=[_item(identity={"name": "id-ok", "resource_group": {"a": 1}})]),
        "identity.resource_group: must be a string, got a dictionary",
    ),
    (
        "workloads",
        _fleet(items=[_item(identity={"name": "id-ok", "resource_group": RG, "location": "west-europe"})]),
        "identity.location: must be an Azure region name",
    ),
    ("workloads", _fleet(items=[_item(credential_name="")]), "credential_name: must not be empty"),
    ("workloads", _fleet(items=[_item(credential_name="a b")]), "credential_name: must be letters, digits"),
    ("workloads", _fleet(items=[_item(token_expiration=60)]), "token_expiration: must be between 3600 and 86400"),
    ("workloads", _fleet(items=[_item(token_expiration=True)]), "token_expiration: must be a number, got a boolean"),
    (
        "workloads",
        _fleet(items=[_item(grants=[{"role": "Reader", "scope": "subscriptions/x"}])]),
        "grants[0].scope: must be an ARM resource ID",
    ),
    ("workloads", _fleet(items=[_item(grants=[{"role": " ", "scope": "/"}])]), "grants[0].role: must not be empty"),
    ("workloads", _fleet(items=[_item(labels={"bad key!": "x"})]), "labels: key 'bad key!'"),
    ("workloads", _fleet(items=[_item(proxy_sidecar_port=70000)]), "proxy_sidecar_port: must be a port number"),
    (
        "workloads",
        _fleet(items=[_item(patch_workloads=[{"kind": "Job", "name": "x"}])]),
        "value of kind must be one of",
    ),
    ("workloads", _fleet(items=[_item(), _item(service_account="other")]), "name: repeats that of items[0]"),
    ("workloads", {**_fleet(state="absent"), "keep_items": [{"name": 1}]}, "keep_items[0]: name: must be a string"),
    # verification: the same items, and the proof's options
    ("workloads_verify", _fleet(items=[_item(namespace="Bad")]), "items[0] (orders): namespace: must be an RFC 1123"),
    ("workloads_verify", _fleet(parallel=33), "parallel: must be 1-32"),
    ("workloads_verify", _fleet(propagation_timeout=True), "propagation_timeout: must be a number, got a boolean"),
    ("workloads_verify", _fleet(keyvault="kv-wid-rbac"), "parameters are required together: keyvault, secret_name"),
]

# The rules every module follows, one module of each kind (the full sweep per module is in the other files).
SHARED_CASES = [
    ("managed_identity", {"resource_group": RG, "name": True}, "name: must be a string, got a boolean"),
    ("aks_cluster", {"resource_group": RG, "name": "aks-x", "kubernetes_version": 1.30}, "kubernetes_version: must"),
    (
        "federated_credential",
        {"resource_group": RG, "identity_name": "id-x", "name": "", "issuer": ISSUER, "subject": "repo:o/r:ref:x"},
        "name: must not be empty",
    ),
    ("wid_namespace", {"name": "ns-x\n"}, "name: must not start or end with whitespace"),
    (
        "wid_service_account",
        {"namespace": "default", "name": ["sa"], "client_id": "00000000-0000-0000-0000-000000000001"},
        "name: must be a string, got a list",
    ),
    ("wid_info", {"namespaces": ["default", {"a": 1}]}, "namespaces[1]: must be a string, got a dictionary"),
    ("wid_verify", {"namespace": "default", "service_account": "sa", "token_expiration": False}, "a boolean"),
    # authentication options, before any sign-in
    ("managed_identity", {"resource_group": RG, "name": "id-x", "subscription_id": "prod"}, "subscription_id: must"),
    ("managed_identity", {"resource_group": RG, "name": "id-x", "client_id": "my-app"}, "client_id: must be a GUID"),
    ("managed_identity", {"resource_group": RG, "name": "id-x", "tenant": "a b"}, "tenant: must be the"),
    ("managed_identity", {"resource_group": RG, "name": "id-x", "tenant": "contoso"}, "tenant: must be the tenant's"),
    ("managed_identity", {"resource_group": RG, "name": "id-x", "cloud_environment": "Public"}, "cloud_environment:"),
    ("managed_identity", {"resource_group": RG, "name": "id-x", "authority_host": "https://x/?a=1"}, "authority_host"),
    ("workloads", _fleet(lro_polling_interval=0), "lro_polling_interval: must be a positive number"),
    ("wid_namespace", {"name": "ns-x", "host": "api.example:6443"}, "host: must be the API server's URL"),
    ("wid_namespace", {"name": "ns-x", "kubeconfig": ""}, "kubeconfig: must not be empty"),
]


@pytest.mark.parametrize(("module", "args", "expected"), FLEET_CASES + SHARED_CASES)
@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
def test_bad_input_is_refused_before_the_first_request(lab, module, args, expected, check):
    probed = run_inprocess(lab, module, copy.deepcopy(args), check=check)
    assert probed.failed, probed.result
    assert expected in probed.msg, probed.msg
    assert "Traceback" not in json.dumps(probed.result)
    assert probed.requests == []


def test_the_values_that_mean_what_they_say_still_converge(lab):
    """The cases above are refusals of these values' spoiled forms: unspoiled, the fleet converges (check mode)."""
    args = _fleet(
        items=[
            _item(
                identity={"name": "id-bad-inputs-fleet", "resource_group": RG, "location": "West Europe"},
                create_namespace=True,
            )
        ],
        tenant_id=lab.env["AZURE_TENANT"],
        default_location="westeurope",
        keyvaults=[{"vault_name": "kv-wid-rbac", "resource_group": RG}],
    )
    probed = run_inprocess(lab, "workloads", args, check=True)
    assert not probed.failed, probed.msg
    assert probed.writes == []


def test_a_sign_in_failure_names_the_credential_not_a_traceback(lab):
    probed = run_inprocess(lab, "workloads", _fleet(secret="not-the-secret"))
    assert probed.failed and probed.msg.startswith("Failed to sign in as service principal"), probed.msg
    assert "not-the-secret" not in json.dumps(probed.result)
    assert probed.writes == []


def test_ansible_playbook_hands_the_modules_the_values_as_written(lab):
    """YAML's `yes` and `1.30`, a dictionary where a string is due and an empty name, as a playbook writes them."""
    mark, kube_mark = lab.last_seq(), lab.kube_mark()
    cases = [
        ("managed_identity", {"resource_group": RG, "name": True}, "name: must be a string, got a boolean"),
        ("aks_cluster", {"resource_group": RG, "name": "aks-x", "kubernetes_version": 1.3}, "kubernetes_version:"),
        (
            "wid_service_account",
            {"namespace": {"a": 1}, "name": "sa", "client_id": "00000000-0000-0000-0000-000000000001"},
            "namespace: must be a string, got a dict",
        ),
        ("workloads", _fleet(items=[_item(service_account="")]), "service_account: must not be empty"),
    ]
    for module, args, expected in cases:
        run = run_module(module, args, env=lab.env)
        assert run.failed and expected in run["msg"], run.result
    assert lab.requests(mark) == [] and lab.kube_requests(kube_mark) == []
