"""Bad input to the Azure modules, against the lab: refused before the first request, naming the option and the rule;
and a missing parent (resource group, identity, vault, cluster, role definition) found by reading, naming the
option, with nothing written, in check mode too.

Each module runs in this process (tests/integration/inprocess.py) with real HTTP to the Azure emulator, so the
emulator's request log says exactly what was sent: for input errors nothing at all, not even a token request.
"""

from __future__ import annotations

import typing as t
import uuid

import pytest

from tests.integration.inprocess import Probed, run_inprocess

RG = "rg-wid-lab"  # the lab's seeded resource group (tests/lab/azure/seed.py)
RBAC_VAULT = "kv-wid-rbac"
POLICY_VAULT = "kv-wid-policy"
CLUSTER = "aks-wid-lab"
UNKNOWN_ROLE = "0e0e0e0e-1111-4222-8333-444444444444"  # no such role definition
ISSUER = "https://oidc.lab.test/tenant/cluster/"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def world(lab) -> dict[str, str]:
    """What the cases name: the subscription, a principal that exists (the lab's deployer) and ID prefixes."""
    subscription = lab.env["AZURE_SUBSCRIPTION_ID"]
    return {
        "sub": subscription,
        "principal": lab.seed["deployer_object_id"],
        "group_scope": f"/subscriptions/{subscription}/resourceGroups/{RG}",
        "vaults": f"/subscriptions/{subscription}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults",
    }


def base(module: str, world: dict[str, str]) -> dict[str, t.Any]:
    """Valid arguments for each module, which the cases then spoil one option at a time."""
    return {
        "resource_group": {"name": "rg-bad-inputs", "location": "westeurope"},
        "managed_identity": {"resource_group": RG, "name": "id-bad-inputs"},
        "federated_credential": {
            "resource_group": RG,
            "identity_name": "id-bad-inputs",
            "name": "fic-bad-inputs",
            "issuer": ISSUER,
            "namespace": "orders",
            "service_account": "api",
        },
        "role_assignment": {"scope": world["group_scope"], "role": "Reader", "principal_id": world["principal"]},
        "keyvault_access": {"resource_group": RG, "vault_name": RBAC_VAULT, "principal_id": world["principal"]},
        "aks_cluster": {"resource_group": RG, "name": "aks-bad-inputs", "location": "westeurope", "wait": False},
        "aks_oidc": {"resource_group": RG, "name": CLUSTER},
    }[module]


def _without(args: dict[str, t.Any], *names: str) -> dict[str, t.Any]:
    return {key: value for key, value in args.items() if key not in names}


# (module, changes to the valid arguments, the option the message must name). A value None removes the option.
BAD_INPUTS: list[tuple[str, dict[str, t.Any], str]] = [
    # resource_group
    ("resource_group", {"name": "rg."}, "name"),
    ("resource_group", {"name": "r" * 91}, "name"),
    ("resource_group", {"name": "rg/x"}, "name"),
    ("resource_group", {"name": ""}, "name"),  # empty is not "omitted"
    ("resource_group", {"location": "west/europe"}, "location"),
    ("resource_group", {"tags": {"team": 1}}, "tags.team"),
    ("resource_group", {"tags": {"a/b": "x"}}, "tags.a/b"),
    ("resource_group", {"tags": {"k": {"nested": "x"}}}, "tags.k"),
    ("resource_group", {"tags": {f"t{i}": "x" for i in range(51)}}, "tags"),
    ("resource_group", {"state": "absent", "wait_timeout": 0}, "wait_timeout"),
    ("resource_group", {"state": "absent", "wait_timeout": 10**12}, "wait_timeout"),
    # managed_identity
    ("managed_identity", {"resource_group": "rg?x"}, "resource_group"),
    ("managed_identity", {"name": "id"}, "name"),
    ("managed_identity", {"name": "-id-bad"}, "name"),
    ("managed_identity", {"name": "i" * 129}, "name"),
    ("managed_identity", {"location": "westeurope!"}, "location"),
    ("managed_identity", {"tags": {"k": None}}, "tags.k"),
    ("managed_identity", {"tags": {"K": "a", "k": "b"}}, "tags.k"),
    # federated_credential
    ("federated_credential", {"resource_group": ".."}, "resource_group"),
    ("federated_credential", {"identity_name": "a/b"}, "identity_name"),
    ("federated_credential", {"name": "f"}, "name"),
    ("federated_credential", {"name": "-fic"}, "name"),
    ("federated_credential", {"issuer": "http://oidc.lab.test/"}, "issuer"),
    ("federated_credential", {"issuer": ISSUER + "?tenant=x"}, "issuer"),
    ("federated_credential", {"issuer": ISSUER + "#x"}, "issuer"),
    ("federated_credential", {"issuer": "https://u:p@oidc.lab.test/"}, "issuer"),
    ("federated_credential", {"namespace": "Orders"}, "namespace"),
    ("federated_credential", {"service_account": "api_v2"}, "service_account"),
    ("federated_credential", {"audiences": ["a", "b"]}, "audiences"),
    ("federated_credential", {"retry_timeout": -1}, "retry_timeout"),
    ("federated_credential", {"retry_timeout": 10**12}, "retry_timeout"),
    # A raw subject must be a ServiceAccount subject Kubernetes could issue.
    (
        "federated_credential",
        {"namespace": None, "service_account": None, "subject": "system:serviceaccount:orders:API"},
        "subject",
    ),
    (
        "federated_credential",
        {"namespace": None, "service_account": None, "subject": "system:serviceaccount:orders"},
        "subject",
    ),
    (
        "federated_credential",
        {"namespace": None, "service_account": None, "subject": "system:serviceaccounts:orders"},
        "subject",
    ),
    (
        "federated_credential",
        {"namespace": None, "service_account": None, "subject": "System:ServiceAccount:a:b"},
        "subject",
    ),
    (
        "federated_credential",
        {"namespace": None, "service_account": None, "subject": "system:serviceaccount:a:b:c"},
        "subject",
    ),
    ("federated_credential", {"namespace": None, "service_account": None, "subject": "s" * 601}, "subject"),
    (
        "federated_credential",
        {"name": None, "namespace": None, "service_account": None, "subject": "repo:o/r:env:x"},
        "name",
    ),
    ("federated_credential", {"subject": "system:serviceaccount:orders:api"}, "subject"),  # with namespace: exclusive
    # role_assignment
    ("role_assignment", {"scope": "subscriptions/x"}, "scope"),
    ("role_assignment", {"scope": "/subscriptions/not-a-guid/resourceGroups/rg"}, "scope"),
    ("role_assignment", {"scope": "/subscriptions/{sub}/resourceGroups/rg."}, "scope"),
    ("role_assignment", {"scope": "/subscriptions/{sub}/resourceGroups/rg?api-version=1"}, "scope"),
    ("role_assignment", {"scope": "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.KeyVault"}, "scope"),
    ("role_assignment", {"role": "/providers/Microsoft.Authorization/roleDefinitions/reader"}, "role"),
    ("role_assignment", {"principal_id": "not-a-guid"}, "principal_id"),
    ("role_assignment", {"principal_id": None, "identity_name": "x", "identity_resource_group": RG}, "identity_name"),
    (
        "role_assignment",
        {"principal_id": None, "identity_name": "id-x", "identity_resource_group": "rg."},
        "identity_resource_group",
    ),
    (
        "role_assignment",
        {"principal_id": None, "identity_name": "id-x"},
        "identity_resource_group",
    ),  # required together
    ("role_assignment", {"identity_name": "id-x", "identity_resource_group": RG}, "principal_id"),  # exclusive
    ("role_assignment", {"principal_type": "MSI"}, "principal_type"),
    # keyvault_access
    ("keyvault_access", {"vault_name": "kv"}, "vault_name"),
    ("keyvault_access", {"vault_name": "kv--wid"}, "vault_name"),
    ("keyvault_access", {"vault_name": "1kv-wid"}, "vault_name"),
    ("keyvault_access", {"vault_name": "kv_wid"}, "vault_name"),
    ("keyvault_access", {"vault_name": "k" * 25}, "vault_name"),
    ("keyvault_access", {"resource_group": "rg."}, "resource_group"),
    ("keyvault_access", {"resource_group": None, "vault_name": None, "vault_id": "kv-wid-rbac"}, "vault_id"),
    ("keyvault_access", {"resource_group": None, "vault_name": None, "vault_id": "{vaults}/kv_1"}, "vault_id"),
    ("keyvault_access", {"vault_id": "{vaults}/kv-wid-rbac"}, "vault_id"),  # exclusive with vault_name
    ("keyvault_access", {"principal_id": "p1"}, "principal_id"),
    ("keyvault_access", {"principal_id": None, "identity_client_id": "c1"}, "identity_client_id"),
    ("keyvault_access", {"principal_id": None, "identity_name": "x"}, "identity_name"),
    (
        "keyvault_access",
        {"principal_id": None, "identity_name": "id-x", "identity_resource_group": "a b"},
        "identity_resource_group",
    ),
    ("keyvault_access", {"secret_permissions": []}, "secret_permissions"),
    ("keyvault_access", {"secret_permissions": ["read"]}, "secret_permissions"),
    ("keyvault_access", {"role": "/providers/Microsoft.Authorization/roleDefinitions/x"}, "role"),
    # aks_cluster
    ("aks_cluster", {"name": "_aks"}, "name"),
    ("aks_cluster", {"name": "a" * 64}, "name"),
    ("aks_cluster", {"resource_group": "rg new"}, "resource_group"),
    ("aks_cluster", {"location": "west europe/2"}, "location"),
    ("aks_cluster", {"node_count": 0}, "node_count"),
    ("aks_cluster", {"node_count": 1001}, "node_count"),
    ("aks_cluster", {"node_count": True}, "node_count"),
    ("aks_cluster", {"vm_size": "Standard DS2"}, "vm_size"),
    ("aks_cluster", {"vm_size": "Standard_DS2_v2/x"}, "vm_size"),
    ("aks_cluster", {"kubernetes_version": "v1.33"}, "kubernetes_version"),
    ("aks_cluster", {"kubernetes_version": 1.3}, "kubernetes_version"),  # YAML's 1.30, unquoted
    ("aks_cluster", {"tags": {"team": True}}, "tags.team"),
    ("aks_cluster", {"wait_timeout": 0}, "wait_timeout"),
    ("aks_cluster", {"wait_timeout": 10**12}, "wait_timeout"),
    # aks_oidc
    ("aks_oidc", {"name": "aks wid"}, "name"),
    ("aks_oidc", {"resource_group": "rg."}, "resource_group"),
    ("aks_oidc", {"oidc_issuer": False, "workload_identity": True}, "workload_identity"),
    ("aks_oidc", {"wait_timeout": -1}, "wait_timeout"),
    ("aks_oidc", {"wait_timeout": 10**12}, "wait_timeout"),  # once an unhandled OverflowError after the PUT
]


def _apply(args: dict[str, t.Any], changes: dict[str, t.Any], world: dict[str, str]) -> dict[str, t.Any]:
    merged = dict(args)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value.format(**world) if isinstance(value, str) else value
    return merged


def _ids(cases: list[tuple[t.Any, ...]]) -> list[str]:
    return [f"{case[0]}-{case[-1]}-{index}" for index, case in enumerate(cases)]


@pytest.mark.parametrize(("module", "changes", "option"), BAD_INPUTS, ids=_ids(BAD_INPUTS))
def test_bad_input_is_refused_before_any_request(lab, world, module, changes, option):
    probed = run_inprocess(lab, module, _apply(base(module, world), changes, world))
    assert probed.failed, probed.result
    assert option in probed.msg, probed.msg
    assert "Traceback" not in probed.msg
    assert probed.requests == []  # nothing sent at all, not even a token request


def _warnings(probed: Probed, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The module's warnings: in its result, or, where ansible-core takes the test process for the controller
    (2.19), printed to stderr as "[WARNING]: ..." lines."""
    messages = []
    for warning in probed.result.get("warnings") or []:
        messages.append(warning if isinstance(warning, str) else str((warning.get("event") or {}).get("msg", "")))
    printed = capsys.readouterr().err
    return messages + [line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith("[WARNING]: ")]


def missing_parents(world: dict[str, str]) -> list[tuple[str, dict[str, t.Any], str]]:
    """(module, arguments, what the message starts with): found by reading in check mode and in a real run."""
    principal, vaults = world["principal"], world["vaults"]
    group = _unique("rg-missing")
    return [
        ("managed_identity", {"resource_group": group, "name": "id-x1"}, f"resource_group: resource group '{group}'"),
        (
            "managed_identity",
            {"resource_group": group, "name": "id-x1", "location": "westeurope"},
            f"resource_group: resource group '{group}' does not exist",
        ),
        (
            "role_assignment",
            {"scope": world["group_scope"], "role": UNKNOWN_ROLE, "principal_id": principal},
            f"role: role definition {UNKNOWN_ROLE} does not exist",
        ),
        (
            "role_assignment",
            {
                "scope": world["group_scope"],
                "role": f"/providers/Microsoft.Authorization/roleDefinitions/{UNKNOWN_ROLE}",
                "principal_id": principal,
            },
            f"role: role definition {UNKNOWN_ROLE} does not exist",
        ),
        (
            "role_assignment",
            {
                "scope": f"/subscriptions/{world['sub']}/resourceGroups/{group}",
                "role": "Reader",
                "principal_id": principal,
            },
            f"scope: resource group '{group}' does not exist",
        ),
        (
            "keyvault_access",
            {"resource_group": RG, "vault_name": "kv-missing-1", "principal_id": principal},
            f"vault_name: key vault 'kv-missing-1' does not exist in resource group '{RG}'",
        ),
        (
            "keyvault_access",
            {"resource_group": group, "vault_name": RBAC_VAULT, "principal_id": principal},
            f"resource_group: resource group '{group}' does not exist",
        ),
        (
            "keyvault_access",
            {"vault_id": f"{vaults}/kv-missing-1".replace(f"/{RG}/", f"/{group}/"), "principal_id": principal},
            f"vault_id: resource group '{group}' does not exist",
        ),
        (
            "keyvault_access",
            {"resource_group": RG, "vault_name": RBAC_VAULT, "principal_id": principal, "role": UNKNOWN_ROLE},
            f"role: role definition {UNKNOWN_ROLE} does not exist",
        ),
        (
            "aks_oidc",
            {"resource_group": RG, "name": "aks-missing-1"},
            f"name: AKS cluster 'aks-missing-1' in resource group '{RG}' does not exist",
        ),
        (
            "aks_oidc",
            {"resource_group": group, "name": CLUSTER},
            f"resource_group: resource group '{group}' does not exist",
        ),
        (
            "aks_cluster",
            {"resource_group": group, "name": "aks-new-1", "location": "westeurope", "create_resource_group": False},
            f"resource_group: resource group '{group}' does not exist and create_resource_group is false",
        ),
        ("aks_cluster", {"resource_group": RG, "name": "aks-new-1"}, "Invalid input: location: is required to create"),
    ]


@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
def test_missing_parents_are_found_by_reading_and_nothing_is_written(lab, world, check):
    for module, args, start in missing_parents(world):
        probed = run_inprocess(lab, module, args, check=check)
        assert probed.failed, (module, args, probed.result)
        assert probed.msg.startswith(start), (module, probed.msg)
        assert "Traceback" not in probed.msg
        assert probed.writes == [], (module, probed.writes)


def missing_identities(world: dict[str, str]) -> list[tuple[str, dict[str, t.Any], str]]:
    """A missing identity fails a real run before any write; in check mode it is a warning naming the option, as an
    earlier task of the play (managed_identity, the workload role) may create it. Every case names its own identity
    and group: ansible-core shows a warning it has already shown in this process only once."""
    fic = {"name": "fic-x1", "issuer": ISSUER, "namespace": "orders", "service_account": "api"}
    grant = {"scope": world["group_scope"], "role": "Reader"}
    vault = {"resource_group": RG, "vault_name": POLICY_VAULT}
    cases = []
    for module, args, named in [
        ("federated_credential", {"resource_group": RG, **fic}, "identity_name"),
        ("federated_credential", {"resource_group": "{group}", **fic}, "resource_group"),
        ("role_assignment", {**grant, "identity_resource_group": RG}, "identity_name"),
        ("role_assignment", {**grant, "identity_resource_group": "{group}"}, "identity_resource_group"),
        ("keyvault_access", vault, "identity_name"),
        ("keyvault_access", {**vault, "identity_resource_group": "{group}"}, "identity_resource_group"),
    ]:
        name, group = _unique("id-missing"), _unique("rg-missing")
        args = {key: value.format(group=group) for key, value in args.items()} | {"identity_name": name}
        start = f"{named}: resource group '{group}'" if "group" in named else f"{named}: managed identity '{name}'"
        cases.append((module, args, start))
    client_id = str(uuid.uuid4())
    cases.append(
        ("keyvault_access", {**vault, "identity_client_id": client_id}, "identity_client_id: no user-assigned")
    )
    return cases


def test_a_missing_identity_fails_a_run_and_is_a_warning_in_check_mode(lab, world, capsys):
    for module, args, start in missing_identities(world):
        probed = run_inprocess(lab, module, args)
        assert probed.failed and probed.msg.startswith(start), (module, probed.msg)
        assert "Traceback" not in probed.msg and probed.writes == []
        capsys.readouterr()
        checked = run_inprocess(lab, module, args, check=True)
        assert not checked.failed and checked.result["changed"] is True, (module, checked.result)
        warnings = _warnings(checked, capsys)
        assert any(w.startswith(start) for w in warnings), (module, warnings)
        assert checked.writes == []


def test_a_missing_identity_is_not_retried(lab, world):
    """The 404-retry of credential writes is for identities known to exist; a missing one costs one list and one
    read of its group, then fails (it used to PUT again and again for retry_timeout seconds)."""
    name = _unique("id-missing")
    args = {"resource_group": RG, "identity_name": name, "name": "fic-x1", "issuer": ISSUER}
    probed = run_inprocess(lab, "federated_credential", {**args, "subject": "system:serviceaccount:a:b"})
    assert probed.failed and probed.msg.startswith(f"identity_name: managed identity '{name}'")
    arm = [request for request in probed.requests if "/subscriptions/" in request]
    assert [request.split()[0] for request in arm] == ["GET", "GET"] and probed.writes == []


def test_absent_with_a_missing_parent_has_nothing_to_do(lab, world):
    group = _unique("rg-missing")
    for module, args in [
        ("managed_identity", {"resource_group": group, "name": "id-x1", "state": "absent"}),
        (
            "federated_credential",
            {"resource_group": group, "identity_name": "id-x1", "name": "fic-x1", "state": "absent"},
        ),
        (
            "keyvault_access",
            {"resource_group": RG, "vault_name": "kv-missing-1", "principal_id": world["principal"], "state": "absent"},
        ),
    ]:
        probed = run_inprocess(lab, module, args)
        assert not probed.failed and probed.result["changed"] is False, (module, probed.result)
        assert probed.writes == []


def test_ok_inputs_still_pass(lab, world):
    """The rules refuse only what Azure or Kubernetes would: the valid edge of each is accepted (check mode)."""
    principal = world["principal"]
    for module, args in [
        ("resource_group", {"name": "rg-(edge).ok_1", "location": "West Europe", "tags": {"t": "v" * 256}}),
        ("managed_identity", {"resource_group": RG, "name": "i" * 128}),
        ("federated_credential", base("federated_credential", world) | {"identity_name": "id-bad-inputs"}),
        (
            "role_assignment",
            {"scope": f"{world['vaults']}/{RBAC_VAULT}", "role": "Key Vault Secrets User", "principal_id": principal},
        ),
        ("keyvault_access", {"vault_id": f"{world['vaults']}/{POLICY_VAULT}", "principal_id": principal}),
        (
            "aks_cluster",
            base("aks_cluster", world)
            | {"node_count": 1000, "vm_size": "Standard_M16-4ms", "kubernetes_version": "1.33"},
        ),
        ("aks_oidc", {"resource_group": RG, "name": CLUSTER, "wait_timeout": 86400}),
    ]:
        probed = run_inprocess(lab, module, args, check=True)  # (the credential's identity does not exist: a warning)
        assert not probed.failed, (module, probed.msg)
        assert probed.writes == []
