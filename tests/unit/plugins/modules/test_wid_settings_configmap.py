"""wid_settings_configmap: the module through main(), with only the kubernetes CoreV1Api replaced by a fake."""

from __future__ import annotations

import json
import typing as t

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule
from ansible_collections.aks.workload_identity.plugins.modules import wid_settings_configmap
from tests.unit.conftest import module_args
from tests.unit.plugins.module_utils.reconcile.test_settings_configmap import CLIENT, TENANT, VAULT, FakeCoreV1

NAME = "orders-api-azure-identity"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeCoreV1:
    fake = FakeCoreV1()
    monkeypatch.setattr(K8sModule, "core_v1", property(lambda self: fake))
    return fake


def run(capsys: pytest.CaptureFixture[str], args: dict[str, t.Any]) -> dict[str, t.Any]:
    with module_args(args), pytest.raises(SystemExit):
        wid_settings_configmap.main()
    return json.loads(capsys.readouterr().out)


def base(**overrides: t.Any) -> dict[str, t.Any]:
    args: dict[str, t.Any] = {"namespace": "orders", "name": NAME, "client_id": CLIENT, "data": {"KEYVAULT_URL": VAULT}}
    args.update(overrides)
    return args


def test_create_returns_the_configmap(api, capsys):
    result = run(capsys, base(tenant_id=TENANT, labels={"team": "orders"}))
    assert result["changed"] is True
    assert result["namespace_created"] is False
    configmap = result["configmap"]
    assert configmap["data"] == {"AZURE_CLIENT_ID": CLIENT, "AZURE_TENANT_ID": TENANT, "KEYVAULT_URL": VAULT}
    assert configmap["labels"] == {"team": "orders"}
    assert configmap["uid"] == api.configmaps[("orders", NAME)]["metadata"]["uid"]
    assert "diff" not in result


def test_second_run_changes_nothing_with_one_read(api, capsys):
    run(capsys, base())
    api.calls.clear()
    assert run(capsys, base())["changed"] is False
    assert api.methods() == ["read_namespaced_config_map"]


def test_check_mode_with_diff_writes_nothing(api, capsys):
    result = run(capsys, base(_ansible_check_mode=True, _ansible_diff=True))
    assert result["changed"] is True
    assert api.configmaps == {}
    assert api.writes() == []
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["data"]["KEYVAULT_URL"] == VAULT


def test_update_keeps_keys_it_does_not_own(api, capsys):
    api.add("orders", NAME, data={"OTHER": "x", "KEYVAULT_URL": "https://old/"})
    result = run(capsys, base(_ansible_diff=True))
    assert result["configmap"]["data"] == {"OTHER": "x", "KEYVAULT_URL": VAULT, "AZURE_CLIENT_ID": CLIENT}
    assert result["diff"]["before"]["data"]["KEYVAULT_URL"] == "https://old/"


def test_absent_keys_keeps_the_configmap(api, capsys):
    api.add("orders", NAME, data={"OTHER": "x", "AZURE_CLIENT_ID": CLIENT, "KEYVAULT_URL": VAULT})
    result = run(
        capsys,
        {"namespace": "orders", "name": NAME, "data": {"KEYVAULT_URL": None}, "state": "absent", "remove": "keys"},
    )
    assert result["changed"] is True
    assert result["configmap"]["data"] == {"OTHER": "x"}


def test_absent_deletes(api, capsys):
    api.add("orders", NAME, data={"AZURE_CLIENT_ID": CLIENT})
    result = run(capsys, {"namespace": "orders", "name": NAME, "state": "absent"})
    assert result["changed"] is True
    assert result["configmap"] == {}
    assert run(capsys, {"namespace": "orders", "name": NAME, "state": "absent"})["changed"] is False


def test_invalid_input_fails_before_any_request(api, capsys):
    result = run(capsys, base(client_id="nope", data={"AZURE_TENANT_ID": TENANT}))
    assert result["failed"] is True
    assert result["errors"] == [
        "client_id: must be a GUID like 00000000-0000-0000-0000-000000000000, got 'nope'",
        "data: key 'AZURE_TENANT_ID' is set with the tenant_id option",
    ]
    assert api.calls == []


@pytest.mark.parametrize("check_mode", [False, True])
def test_missing_namespace_names_the_option(api, capsys, check_mode):
    result = run(capsys, base(namespace="payments", _ansible_check_mode=check_mode))
    assert result["failed"] is True
    assert result["msg"] == (
        "namespace: namespace 'payments' does not exist; set create_namespace: true or create it first"
    )
    assert api.writes(persisted_only=False) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"name": "a" * 254}, "name: must be at most 253 characters"),
        ({"data": {"k" * 254: "v"}}, "data: key"),
        ({"data": {"PORT": 8080}}, "data.PORT: must be a string"),
        ({"data": {"NESTED": {"a": "b"}}}, "data.NESTED: must be a string"),
        ({"data": {"BIG": "é" * (512 * 1024 + 1)}}, "data: keys and values must total at most 1048576 bytes"),
        ({"labels": {"team": "a b"}}, "labels.team: must be at most 63"),
    ],
    ids=["name-too-long", "key-too-long", "number-value", "nested-value", "size-in-bytes", "label-value"],
)
def test_option_rules_fail_before_any_request(api, capsys, overrides, expected):
    result = run(capsys, base(**overrides))
    assert result["failed"] is True and result["msg"].startswith("Invalid input: ")
    assert any(error.startswith(expected) for error in result["errors"]), result["errors"]
    assert api.calls == []
