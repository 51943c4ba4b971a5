"""wid_workload_patch: the module through main(), with only the kubernetes API clients replaced by a fake."""

from __future__ import annotations

import json
import typing as t

import pytest
from ansible.module_utils.basic import AnsibleModule

from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8sModule
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_INJECT_PROXY_SIDECAR,
    LABEL_USE,
)
from ansible_collections.aks.workload_identity.plugins.modules import wid_workload_patch
from tests.unit.conftest import module_args
from tests.unit.plugins.module_utils.reconcile.test_service_account import api_error
from tests.unit.plugins.module_utils.reconcile.test_workload_patch import FakeWorkloadApi, cronjob, deployment

API_KEY = "kube-bearer-token-that-must-never-show"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeWorkloadApi:
    fake = FakeWorkloadApi()
    monkeypatch.setattr(K8sModule, "apps_v1", property(lambda self: fake))
    monkeypatch.setattr(K8sModule, "batch_v1", property(lambda self: fake))
    monkeypatch.setattr(K8sModule, "core_v1", property(lambda self: fake))  # read_namespace
    return fake


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    emitted: list[str] = []
    monkeypatch.setattr(AnsibleModule, "warn", lambda self, warning, **kwargs: emitted.append(warning))
    return emitted


def run(capsys: pytest.CaptureFixture[str], args: dict[str, t.Any]) -> dict[str, t.Any]:
    with module_args(args), pytest.raises(SystemExit):
        wid_workload_patch.main()
    return json.loads(capsys.readouterr().out)


def base(**overrides: t.Any) -> dict[str, t.Any]:
    args: dict[str, t.Any] = {
        "namespace": "orders",
        "kind": "Deployment",
        "name": "orders-api",
        "service_account": "orders-api",
    }
    args.update(overrides)
    return args


def test_patch_returns_the_workload_and_where_its_pod_template_is(api, capsys):
    api.add("deployment", deployment())
    result = run(capsys, base(proxy_sidecar=True))
    assert result["changed"] is True
    assert result["restarts_pods"] is True
    assert result["pod_template"] == "spec.template"
    workload = result["workload"]
    assert workload["labels"][LABEL_USE] == "true"
    assert workload["annotations"][ANNOTATION_INJECT_PROXY_SIDECAR] == "true"
    assert (workload["service_account"], workload["uid"]) == ("orders-api", "uid-1")
    assert "deprecated_service_account" not in workload
    assert "diff" not in result


def test_second_run_changes_nothing_with_one_read(api, capsys):
    api.add("deployment", deployment())
    run(capsys, base())
    api.calls.clear()
    result = run(capsys, base())
    assert result["changed"] is False
    assert result["restarts_pods"] is False
    assert api.methods() == ["read_namespaced_deployment"]


def test_check_mode_with_diff_writes_nothing(api, capsys):
    api.add("cron_job", cronjob())
    result = run(capsys, base(kind="CronJob", name="nightly", _ansible_check_mode=True, _ansible_diff=True))
    assert result["changed"] is True
    assert result["pod_template"] == "spec.jobTemplate.spec.template"
    assert api.writes() == []
    assert api.writes(persisted_only=False) == ["patch_namespaced_cron_job"]
    assert result["diff"]["before"]["workload_identity"] is False
    assert result["diff"]["after"]["workload_identity"] is True
    assert "uid" not in result["diff"]["after"]


def test_service_account_change_warns(api, capsys, warnings):
    api.add("deployment", deployment(service_account="builder"))
    run(capsys, base())
    assert any("ran as ServiceAccount 'builder'" in warning for warning in warnings)


def test_absent_on_a_missing_workload_is_no_change(api, capsys):
    result = run(capsys, {"namespace": "orders", "kind": "DaemonSet", "name": "gone", "state": "absent"})
    assert result["changed"] is False
    assert result["workload"] == {}


@pytest.mark.parametrize("check_mode", [False, True])
def test_present_on_a_missing_workload_fails_naming_it(api, capsys, check_mode):
    result = run(capsys, base(kind="StatefulSet", name="gone", _ansible_check_mode=check_mode))
    assert result["failed"] is True
    assert result["msg"].startswith("name: StatefulSet 'orders/gone': it does not exist; create the workload first")
    assert api.methods() == ["read_namespaced_stateful_set", "read_namespace"]


def test_present_in_a_missing_namespace_fails_naming_the_namespace(api, capsys):
    result = run(capsys, base(namespace="payments"))
    assert result["failed"] is True
    assert result["msg"].startswith("namespace: namespace 'payments' does not exist")
    assert api.writes(persisted_only=False) == []


def test_service_account_is_required_when_present(api, capsys):
    result = run(capsys, {"namespace": "orders", "kind": "Deployment", "name": "orders-api"})
    assert result["failed"] is True
    assert "service_account" in result["msg"]


def test_invalid_input_fails_before_any_request(api, capsys):
    result = run(capsys, base(namespace="Orders", proxy_sidecar=True, proxy_sidecar_port=0))
    assert result["failed"] is True
    assert len(result["errors"]) == 2
    assert api.calls == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"name": "a/b"}, "name: must be an RFC 1123 subdomain"),
        ({"kind": "CronJob", "name": "n" * 53}, "name: must be at most 52 characters, got 53"),
        ({"proxy_sidecar_port": 8001}, "proxy_sidecar_port: only applies with proxy_sidecar: true"),
        ({"proxy_sidecar": False, "proxy_sidecar_port": 8001}, "proxy_sidecar_port: only applies with proxy_sidecar"),
        ({"proxy_sidecar": True, "proxy_sidecar_port": 65536}, "proxy_sidecar_port: must be a port number 1-65535"),
    ],
    ids=["name-with-slash", "cronjob-name-too-long", "port-without-sidecar", "port-with-sidecar-off", "port-range"],
)
def test_option_rules_fail_before_any_request(api, capsys, overrides, expected):
    result = run(capsys, base(**overrides))
    assert result["failed"] is True and result["msg"].startswith("Invalid input: ")
    assert any(error.startswith(expected) for error in result["errors"]), result["errors"]
    assert api.calls == []


def test_api_key_never_appears_in_a_failure(api, capsys):
    api.add("deployment", deployment())
    api.faults["patch_namespaced_deployment"] = [api_error(403, "Forbidden", f"token {API_KEY} is not allowed")]
    result = run(capsys, base(api_key=API_KEY, host="https://127.0.0.1:6443"))
    assert result["failed"] is True
    assert API_KEY not in json.dumps(result)
