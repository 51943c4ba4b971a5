"""wid_service_account: the module through main(), with only the kubernetes CoreV1Api replaced by a fake."""

from __future__ import annotations

import json
import typing as t

import pytest
from ansible.module_utils.basic import AnsibleModule

from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_CLIENT_ID,
    ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION,
    ANNOTATION_TENANT_ID,
)
from ansible_collections.aks.workload_identity.plugins.modules import wid_service_account
from tests.unit.conftest import module_args
from tests.unit.plugins.module_utils.reconcile.test_service_account import (
    CLIENT,
    OTHER_CLIENT,
    TENANT,
    FakeCoreV1,
    api_error,
)

API_KEY = "kube-bearer-token-that-must-never-show"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeCoreV1:
    fake = FakeCoreV1()
    monkeypatch.setattr(K8sModule, "core_v1", property(lambda self: fake))
    return fake


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Warnings the module emits (in a test process ansible-core sends them to Display, not the result)."""
    emitted: list[str] = []
    monkeypatch.setattr(AnsibleModule, "warn", lambda self, warning, **kwargs: emitted.append(warning))
    return emitted


def run(capsys: pytest.CaptureFixture[str], args: dict[str, t.Any]) -> dict[str, t.Any]:
    """main() with ``args``; returns the JSON it printed (exit_json and fail_json both end in SystemExit)."""
    with module_args(args), pytest.raises(SystemExit):
        wid_service_account.main()
    return json.loads(capsys.readouterr().out)


def base(**overrides: t.Any) -> dict[str, t.Any]:
    args: dict[str, t.Any] = {"namespace": "orders", "name": "orders-api", "client_id": CLIENT}
    args.update(overrides)
    return args


def test_create_returns_the_service_account_and_subject(api, capsys):
    result = run(capsys, base(labels={"team": "orders"}, tenant_id=TENANT, token_expiration=7200))
    assert result["changed"] is True
    assert result["subject"] == "system:serviceaccount:orders:orders-api"
    assert result["namespace_created"] is False
    assert result["stale_pods"] == []
    account = result["service_account"]
    assert account["uid"] == api.service_accounts[("orders", "orders-api")]["metadata"]["uid"]
    assert account["labels"] == {"team": "orders"}
    assert account["annotations"] == {
        ANNOTATION_CLIENT_ID: CLIENT,
        ANNOTATION_TENANT_ID: TENANT,
        ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION: "7200",
    }
    assert (account["client_id"], account["tenant_id"], account["token_expiration"]) == (CLIENT, TENANT, 7200)
    assert "diff" not in result


def test_second_run_changes_nothing_with_one_read(api, capsys):
    run(capsys, base())
    api.calls.clear()
    result = run(capsys, base())
    assert result["changed"] is False
    assert api.methods() == ["read_namespaced_service_account"]


def test_check_mode_with_diff_writes_nothing(api, capsys):
    result = run(capsys, base(_ansible_check_mode=True, _ansible_diff=True))
    assert result["changed"] is True
    assert api.service_accounts == {}
    assert api.writes() == []  # the only write was a dry run
    assert api.writes(persisted_only=False) == ["create_namespaced_service_account"]
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["annotations"] == {ANNOTATION_CLIENT_ID: CLIENT}
    assert result["service_account"]["uid"] is None


def test_diff_of_an_update_shows_before_and_after(api, capsys):
    api.add("orders", "orders-api", labels={"keep": "me"}, annotations={ANNOTATION_CLIENT_ID: OTHER_CLIENT})
    result = run(capsys, base(_ansible_diff=True))
    assert result["changed"] is True
    before, after = result["diff"]["before"], result["diff"]["after"]
    assert before["client_id"] == OTHER_CLIENT and after["client_id"] == CLIENT
    assert before["labels"] == after["labels"] == {"keep": "me"}
    assert "uid" not in before and "uid" not in after


def test_client_id_change_warns_and_lists_stale_pods(api, capsys, warnings):
    api.add("orders", "orders-api", annotations={ANNOTATION_CLIENT_ID: OTHER_CLIENT})
    api.add_pod("orders", "orders-api-abc", "orders-api")
    result = run(capsys, base())
    assert result["stale_pods"] == ["orders-api-abc"]
    assert any("orders-api-abc" in warning and "until they are restarted" in warning for warning in warnings)


def test_forbidden_pod_list_still_succeeds_with_a_warning(api, capsys, warnings):
    api.add("orders", "orders-api", annotations={ANNOTATION_CLIENT_ID: OTHER_CLIENT})
    api.faults["list_namespaced_pod"] = [api_error(403, "Forbidden", "pods is forbidden")]
    result = run(capsys, base())
    assert result["changed"] is True
    assert result["stale_pods"] is None
    assert any("Could not check which pods use" in warning for warning in warnings)


def test_absent_deletes_and_returns_an_empty_service_account(api, capsys):
    api.add("orders", "orders-api", annotations={ANNOTATION_CLIENT_ID: CLIENT})
    result = run(capsys, {"namespace": "orders", "name": "orders-api", "state": "absent", "_ansible_diff": True})
    assert result["changed"] is True
    assert result["service_account"] == {}
    assert result["subject"] == "system:serviceaccount:orders:orders-api"
    assert result["diff"]["after"] == {}
    assert api.service_accounts == {}
    again = run(capsys, {"namespace": "orders", "name": "orders-api", "state": "absent"})
    assert again["changed"] is False


def test_absent_remove_annotations_keeps_the_service_account(api, capsys):
    api.add("orders", "orders-api", labels={"keep": "me"}, annotations={ANNOTATION_CLIENT_ID: CLIENT, "x": "y"})
    result = run(
        capsys,
        {"namespace": "orders", "service_account": "orders-api", "state": "absent", "remove": "annotations"},
    )
    assert result["changed"] is True
    assert result["service_account"]["annotations"] == {"x": "y"}
    assert result["service_account"]["labels"] == {"keep": "me"}


@pytest.mark.parametrize("check_mode", [False, True])
def test_missing_namespace_is_found_by_reading_and_names_the_option(api, capsys, check_mode):
    result = run(capsys, base(namespace="payments", _ansible_check_mode=check_mode))
    assert result["failed"] is True
    assert result["msg"] == (
        "namespace: namespace 'payments' does not exist; set create_namespace: true or create it first"
    )
    assert result["error_code"] == "NotFound"
    assert api.methods() == ["read_namespaced_service_account", "read_namespace"]  # no write, not even a dry run


def test_create_namespace_reports_it(api, capsys):
    result = run(capsys, base(namespace="payments", create_namespace=True))
    assert result["changed"] is True
    assert result["namespace_created"] is True
    assert "payments" in api.namespaces


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (base(client_id="nope"), "client_id: must be a GUID like 00000000-0000-0000-0000-000000000000, got 'nope'"),
        (base(namespace="Orders"), "namespace: must be an RFC 1123 label"),
        (base(name="orders_api"), "name: must be an RFC 1123 subdomain"),
        (base(token_expiration=60), "token_expiration: must be between 3600 and 86400 seconds, got 60"),
        (base(tenant_id="contoso"), "tenant_id: must be a GUID"),
        (base(labels={"bad key": "x"}), "labels: key 'bad key'"),
        (base(annotations={ANNOTATION_CLIENT_ID: CLIENT}), "is owned by this module; set it with the client_id option"),
        (base(name="a" * 254), "name: must be at most 253 characters, got 254"),
        (base(labels={"team": "x" * 64}), "labels.team: must be at most 63"),
        (base(labels={"team": {"nested": "x"}}), "labels.team: must be a string"),
        (base(annotations={"note": 1}), "annotations.note: must be a string"),
        (base(annotations={"big": "é" * (128 * 1024 + 1)}), "annotations: keys and values must total at most 262144"),
        (base(token_expiration=86401), "token_expiration: must be between 3600 and 86400 seconds"),
    ],
)
def test_bad_input_fails_before_any_request(api, capsys, args, expected):
    result = run(capsys, args)
    assert result["failed"] is True
    assert result["msg"].startswith("Invalid input: ")
    assert any(expected in error for error in result["errors"]), result["errors"]
    assert api.calls == []


def test_every_input_error_is_reported_at_once(api, capsys):
    result = run(capsys, base(namespace="A", client_id="x", token_expiration=1))
    assert len(result["errors"]) >= 3
    assert api.calls == []


def test_client_id_is_required_when_present(api, capsys):
    result = run(capsys, {"namespace": "orders", "name": "orders-api"})
    assert result["failed"] is True
    assert "client_id" in result["msg"]
    assert api.calls == []


def test_api_errors_name_action_target_and_code_and_hide_the_api_key(api, capsys):
    api.faults["read_namespaced_service_account"] = [api_error(401, "Unauthorized", f"token {API_KEY} is not valid")]
    result = run(capsys, base(api_key=API_KEY, host="https://127.0.0.1:6443"))
    assert result["failed"] is True
    assert result["msg"].startswith("Failed to read ServiceAccount 'orders/orders-api': Unauthorized: token ")
    assert result["error_code"] == "Unauthorized"
    assert result["status"] == 401
    assert API_KEY not in json.dumps(result)


def test_server_side_rejection_is_reported(api, capsys):
    api.faults["create_namespaced_service_account"] = [
        api_error(403, "Forbidden", "unable to create new content in namespace orders because it is being terminated")
    ]
    result = run(capsys, base())
    assert result["failed"] is True
    assert result["msg"] == (
        "Failed to create ServiceAccount 'orders/orders-api': Forbidden: unable to create new content in namespace "
        "orders because it is being terminated"
    )
