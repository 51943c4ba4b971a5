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


def test_present_on_a_missing_workload_fails_naming_it(api, capsys):
    result = run(capsys, base(kind="StatefulSet", name="gone"))
    assert result["failed"] is True
    assert result["msg"].startswith("Failed to patch the pod template of StatefulSet 'orders/gone': it does not exist")


def test_service_account_is_required_when_present(api, capsys):
    result = run(capsys, {"namespace": "orders", "kind": "Deployment", "name": "orders-api"})
    assert result["failed"] is True
    assert "service_account" in result["msg"]


def test_invalid_input_fails_before_any_request(api, capsys):
    result = run(capsys, base(namespace="Orders", proxy_sidecar_port=0))
    assert result["failed"] is True
    assert len(result["errors"]) == 2
    assert api.calls == []


def test_api_key_never_appears_in_a_failure(api, capsys):
    api.add("deployment", deployment())
    api.faults["patch_namespaced_deployment"] = [api_error(403, "Forbidden", f"token {API_KEY} is not allowed")]
    result = run(capsys, base(api_key=API_KEY, host="https://127.0.0.1:6443"))
    assert result["failed"] is True
    assert API_KEY not in json.dumps(result)
