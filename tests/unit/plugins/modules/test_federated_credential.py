"""federated_credential through main(): only the MSI SDK client is a fake (SDK models in, azure-core errors out)."""

from __future__ import annotations

import json
import typing as t

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.msi.models import FederatedIdentityCredential
from azure.mgmt.resource.resources.models import ResourceGroup

from ansible_collections.aks.workload_identity.plugins.module_utils import azure_client
from ansible_collections.aks.workload_identity.plugins.module_utils import workload_identity as wi
from ansible_collections.aks.workload_identity.plugins.modules import federated_credential
from tests.unit.conftest import Pager, failure, module_args

SUB = "11111111-2222-3333-4444-555555555555"
SECRET = "super-secret-value-42"
AUTH = {
    "subscription_id": SUB,
    "client_id": "3f2a9c1b-0d4e-4c6b-9a8f-1e2d3c4b5a69",
    "secret": SECRET,
    "tenant": "72f988bf-86f1-41af-91ab-2d7cd011db47",
}
IDENTITY = f"/subscriptions/{SUB}/resourcegroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
ISSUER = "https://westeurope.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/"
SUBJECT = "system:serviceaccount:orders:api"


class Response:
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        self.status_code, self.reason, self.headers, self.request = status, "Reason", headers or {}, None
        self.content_type = "application/json; charset=utf-8"
        self._text = json.dumps({"error": {"code": code, "message": message}})

    def text(self, encoding: str | None = None) -> str:
        return self._text

    def body(self) -> bytes:
        return self._text.encode()


def arm_error(status: int, code: str, message: str, cls: type = HttpResponseError) -> HttpResponseError:
    return cls(response=Response(status, code, message))


def concurrent() -> HttpResponseError:
    # azure-behaviour §4: the service's 409 when two credential writes on one identity overlap.
    return arm_error(
        409,
        azure_client.CODE_CONCURRENT_FIC_WRITES,
        "Too many Federated Identity Credentials are written concurrently for the managed identity "
        f"'{IDENTITY.lower()}'. Concurrent Federated Identity Credentials writes under the same managed identity "
        "are not supported.",
        ResourceExistsError,
    )


def parent_missing() -> HttpResponseError:
    return arm_error(404, "NotFound", "The parent user-assigned identity doesn't exist.", ResourceNotFoundError)


class FakeCredentials:
    """federated_identity_credentials operations over an in-memory identity; ``script`` queues errors per call."""

    def __init__(self) -> None:
        self.identity_exists = True
        self.group_exists = True  # the identity's resource group, read by the module only when the list says 404
        self.store: dict[str, dict[str, t.Any]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.script: dict[str, list[t.Any]] = {"list": [], "put": [], "delete": []}

    def add(self, name: str, issuer: str = ISSUER, subject: str = SUBJECT, audiences: list[str] | None = None) -> None:
        self.store[name.lower()] = {
            "id": f"{IDENTITY}/federatedIdentityCredentials/{name}",
            "name": name,
            "properties": {"issuer": issuer, "subject": subject, "audiences": audiences or [wi.DEFAULT_AUDIENCE]},
        }

    def get(self, resource_group: str) -> ResourceGroup:
        """resource_groups.get: the group of the identity."""
        self.calls.append(("get group", resource_group))
        if not self.group_exists:
            raise arm_error(404, "ResourceGroupNotFound", f"Resource group '{resource_group}' could not be found.")
        return ResourceGroup(location="westeurope")

    def _next(self, operation: str) -> None:
        if self.script[operation]:
            step = self.script[operation].pop(0)
            if callable(step):
                step = step()
            if isinstance(step, BaseException):
                raise step

    def list(self, resource_group: str, identity: str) -> t.Iterator[FederatedIdentityCredential]:
        self.calls.append(("list", identity))
        self._next("list")
        if not self.identity_exists:
            raise parent_missing()
        return Pager([FederatedIdentityCredential.deserialize(c) for c in list(self.store.values())])

    def create_or_update(
        self, resource_group: str, identity: str, name: str, body: dict
    ) -> FederatedIdentityCredential:
        self.calls.append(("put", name))
        self._next("put")
        if not self.identity_exists:
            raise parent_missing()
        self.add(self.store.get(name.lower(), {}).get("name", name), body["issuer"], body["subject"], body["audiences"])
        return FederatedIdentityCredential.deserialize(self.store[name.lower()])

    def delete(self, resource_group: str, identity: str, name: str) -> None:
        self.calls.append(("delete", name))
        self._next("delete")
        if not self.identity_exists:
            raise parent_missing()
        self.store.pop(name.lower(), None)

    @property
    def writes(self) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] not in ("list", "get group")]


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Warnings the module gives. Under pytest ansible-core believes it is the controller and prints them instead
    of returning them, so record them at AzureModule.warn."""
    recorded: list[str] = []
    monkeypatch.setattr(azure_client.AzureModule, "warn", lambda self, message: recorded.append(message))
    return recorded


@pytest.fixture
def fics(monkeypatch: pytest.MonkeyPatch) -> FakeCredentials:
    fake = FakeCredentials()

    def msi_client(credential, subscription_id, **kwargs):
        assert subscription_id == SUB
        return type("Msi", (), {"federated_identity_credentials": fake})()

    def resource_client(credential, subscription_id, **kwargs):
        return type("Resources", (), {"resource_groups": fake})()

    monkeypatch.setattr(azure_client, "ManagedServiceIdentityClient", msi_client)
    monkeypatch.setattr(azure_client, "ResourceManagementClient", resource_client)
    return fake


def _payload(args: dict[str, t.Any], check: bool) -> dict[str, t.Any]:
    payload = {**AUTH, "resource_group": "rg1", "identity_name": "id1", **args}
    if check:
        payload["_ansible_check_mode"] = True
    return payload


def run(capsys: pytest.CaptureFixture[str], args: dict[str, t.Any], check: bool = False) -> dict[str, t.Any]:
    with module_args(_payload(args, check)), pytest.raises(SystemExit):
        federated_credential.main()
    return json.loads(capsys.readouterr().out)


def fail(capsys: pytest.CaptureFixture[str], args: dict[str, t.Any], check: bool = False) -> dict[str, t.Any]:
    with module_args(_payload(args, check)):
        return failure(capsys, federated_credential.main)


SA = {"issuer": ISSUER, "namespace": "orders", "service_account": "api"}


# --- the main path -------------------------------------------------------------------------------------------------------
def test_check_mode_plans_a_create_with_one_list_and_no_write(fics, capsys):
    result = run(capsys, {**SA, "name": "fic1"}, check=True)
    assert result["changed"] is True and result["action"] == "create"
    assert fics.calls == [("list", "id1")] and fics.store == {}
    assert result["federated_credential"] == {
        "id": f"{IDENTITY}/federatedIdentityCredentials/fic1",
        "name": "fic1",
        "issuer": ISSUER,
        "subject": SUBJECT,
        "audiences": [wi.DEFAULT_AUDIENCE],
    }
    assert result["credential_count"] == 1
    assert result["diff"] == {"before": {}, "after": result["federated_credential"]}


def test_create_then_rerun_is_a_single_list(fics, capsys):
    created = run(capsys, SA)
    name = wi.default_federated_credential_name(ISSUER, "orders", "api")
    assert created["changed"] is True and created["federated_credential"]["name"] == name
    assert fics.calls == [("list", "id1"), ("put", name)]
    fics.calls.clear()
    again = run(capsys, SA)
    assert again["changed"] is False and again["action"] == "none" and again["credential_count"] == 1
    assert fics.calls == [("list", "id1")]
    assert again["federated_credential"] == created["federated_credential"]


def test_existing_pair_under_another_name_is_adopted_without_a_write(fics, capsys, warnings):
    fics.add("made-by-az-cli")
    result = run(capsys, {**SA, "name": "fic1"})
    assert result["changed"] is False and result["action"] == "adopt"
    assert result["federated_credential"]["name"] == "made-by-az-cli"
    assert fics.writes == []
    assert len(warnings) == 1 and "'made-by-az-cli'" in warnings[0]


def test_issuer_change_updates_in_place_and_diffs(fics, capsys):
    fics.add("fic1", issuer="https://old.example/issuer/")
    result = run(capsys, {**SA, "name": "fic1"})
    assert result["changed"] is True and result["action"] == "update"
    assert result["diff"]["before"]["issuer"] == "https://old.example/issuer/"
    assert result["diff"]["after"]["issuer"] == ISSUER
    assert fics.writes == [("put", "fic1")] and fics.store["fic1"]["properties"]["issuer"] == ISSUER


def test_near_miss_is_a_warning(fics, capsys, warnings):
    fics.add("old", issuer=ISSUER.rstrip("/"))
    result = run(capsys, {**SA, "name": "fic1"})
    assert result["changed"] is True
    assert len(warnings) == 1 and "trailing slash" in warnings[0] and "AADSTS70021" in warnings[0]


def test_absent_by_pair_check_mode_then_delete_then_no_op(fics, capsys):
    fics.add("whatever-name")
    check = run(capsys, {**SA, "state": "absent"}, check=True)
    assert check["changed"] is True and fics.writes == []
    assert check["diff"]["before"]["name"] == "whatever-name" and check["diff"]["after"] == {}
    deleted = run(capsys, {**SA, "state": "absent"})
    assert deleted["changed"] is True and deleted["credential_count"] == 0 and fics.store == {}
    assert fics.writes == [("delete", "whatever-name")]
    assert run(capsys, {**SA, "state": "absent"})["changed"] is False


def test_absent_by_name_only(fics, capsys):
    fics.add("fic1")
    result = run(capsys, {"name": "fic1", "state": "absent"})
    assert result["changed"] is True and fics.store == {}


def test_absent_on_a_missing_identity_is_no_change(fics, capsys):
    fics.identity_exists = False
    result = run(capsys, {"name": "fic1", "state": "absent"})
    assert result["changed"] is False and result["credential_count"] == 0 and fics.writes == []


# --- limits and bad input: nothing sent --------------------------------------------------------------------------------
def test_twenty_credentials_fail_before_the_write(fics, capsys):
    for i in range(20):
        fics.add(f"c{i:02d}", subject=f"system:serviceaccount:ns:sa{i}")
    result = fail(capsys, {**SA, "name": "fic21"})
    assert result["error_code"] == "FederatedCredentialLimitReached" and "20 of the 20" in result["msg"]
    assert fics.writes == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({**SA, "name": "x"}, "name: must be 3-120 characters"),
        ({**SA, "issuer": "http://plain.example/"}, "issuer: must be an https URL"),
        ({**SA, "audiences": ["a", "b"]}, "audiences: must contain exactly one audience, got 2"),
        ({"issuer": ISSUER, "subject": "s" * 601, "name": "fic1"}, "subject: must be at most 600"),
        ({"issuer": ISSUER, "namespace": "Orders", "service_account": "api"}, "namespace: must be an RFC 1123"),
        ({"issuer": ISSUER, "subject": "repo:org/app:ref:refs/heads/main"}, "name: is required when the subject"),
        ({"state": "absent", "issuer": ISSUER}, "name: is required to delete"),
        # A ServiceAccount subject that Kubernetes could never put in a token.
        ({"issuer": ISSUER, "subject": "system:serviceaccount:orders:API"}, "subject: name 'API' must be an RFC 1123"),
        ({"issuer": ISSUER, "subject": "system:serviceaccount:Orders:api"}, "subject: namespace 'Orders' must be"),
        ({"issuer": ISSUER, "subject": "system:serviceaccount:orders"}, "subject: must be system:serviceaccount:<"),
        ({"issuer": ISSUER, "subject": "system:serviceaccount:a:b:c"}, "subject: must be system:serviceaccount:<"),
        ({"issuer": ISSUER, "subject": "system:serviceaccounts:orders"}, "(lower case, singular 'serviceaccount')"),
        ({"issuer": ISSUER, "subject": "System:ServiceAccount:orders:api"}, "(lower case, singular"),
        ({"state": "absent", "issuer": ISSUER, "subject": "system:serviceaccount:orders:Api"}, "subject: name 'Api'"),
        # Issuer URL parts an OIDC issuer cannot have.
        ({**SA, "issuer": ISSUER + "?x=1"}, "issuer: must not have a query"),
        ({**SA, "issuer": ISSUER + "#frag"}, "issuer: must not have a fragment"),
        ({**SA, "issuer": "https://user:pw@issuer.example/"}, "issuer: must not hold a user name or password"),
        # Names of the parents, and the retry bound.
        ({**SA, "resource_group": "rg/1"}, "resource_group: 'rg/1' is not a valid resource group name"),
        ({**SA, "identity_name": "id"}, "identity_name: must be 3-128 letters"),
        ({**SA, "retry_timeout": -1}, "retry_timeout: must be between 0 and 86400 seconds, got -1"),
        ({**SA, "retry_timeout": 1e12}, "retry_timeout: must be between 0 and 86400 seconds"),
    ],
)
def test_bad_input_is_rejected_before_any_request(fics, capsys, args, fragment):
    result = fail(capsys, args)
    assert fragment in result["msg"] and result["error_code"] == "InvalidParameter"
    assert result["msg"].startswith("Invalid input: ") and result["errors"]
    assert fics.calls == []


@pytest.mark.parametrize(
    "subject",
    ["system:serviceaccount:orders:api", "system:serviceaccount:orders:api.v2", "repo:org/app:environment:prod"],
)
def test_well_formed_subjects_are_accepted(fics, capsys, subject):
    result = run(capsys, {"issuer": ISSUER, "subject": subject, "name": "fic1"})
    assert result["changed"] is True and result["federated_credential"]["subject"] == subject


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"issuer": ISSUER, "subject": SUBJECT, "namespace": "orders", "service_account": "api"}, "mutually exclusive"),
        ({"issuer": ISSUER, "namespace": "orders"}, "parameters are required together"),
        ({"subject": SUBJECT}, "issuer"),
        ({"issuer": ISSUER}, "subject, namespace"),
    ],
)
def test_option_combinations_are_declared(fics, capsys, args, fragment):
    result = fail(capsys, args)
    assert fragment in result["msg"] and fics.calls == []


# --- retries ---------------------------------------------------------------------------------------------------------------
def test_concurrent_write_409s_are_retried_until_the_write_lands(fics, capsys):
    fics.script["put"] = [concurrent, concurrent]
    result = run(capsys, {**SA, "name": "fic1"})
    assert result["changed"] is True and list(fics.store) == ["fic1"]
    assert fics.writes == [("put", "fic1")] * 3


def test_parent_missing_on_an_identity_just_listed_is_retried(fics, capsys):
    # The list saw the identity; the write's front end does not yet (azure-behaviour §4): a 404 there is retried.
    fics.script["put"] = [parent_missing()]
    result = run(capsys, {**SA, "name": "fic1"})
    assert result["changed"] is True and result["credential_count"] == 1
    assert fics.writes == [("put", "fic1"), ("put", "fic1")]


def test_a_missing_identity_is_found_by_reading_and_nothing_is_written(fics, capsys):
    fics.identity_exists = False
    result = fail(capsys, {**SA, "name": "fic1"})
    assert result["msg"].startswith("identity_name: managed identity 'id1' in resource group 'rg1' does not exist")
    assert result["error_code"] == "ResourceNotFound" and fics.writes == []
    assert fics.calls == [("list", "id1"), ("get group", "rg1")]  # no retry loop: one list, one read of the group


def test_a_missing_resource_group_is_found_by_reading_and_named(fics, capsys):
    fics.identity_exists = fics.group_exists = False
    result = fail(capsys, {**SA, "name": "fic1"})
    assert result["msg"] == "resource_group: resource group 'rg1' does not exist"
    assert result["error_code"] == "ResourceGroupNotFound"
    assert fics.calls == [("list", "id1"), ("get group", "rg1")]


@pytest.mark.parametrize(("group_exists", "option"), [(True, "identity_name: "), (False, "resource_group: ")])
def test_check_mode_warns_about_a_missing_identity_naming_the_option(fics, capsys, warnings, group_exists, option):
    fics.identity_exists, fics.group_exists = False, group_exists
    result = run(capsys, {**SA, "name": "fic1"}, check=True)
    assert result["changed"] is True and fics.writes == []
    assert [w for w in warnings if w.startswith(option) and "check mode" in w]


def test_absent_on_a_missing_identity_has_nothing_to_do(fics, capsys):
    fics.identity_exists = False
    result = run(capsys, {"name": "fic1", "state": "absent"})
    assert result["changed"] is False and fics.calls == [("list", "id1")]


def test_retries_are_bounded_and_the_error_names_action_object_and_code(fics, capsys):
    fics.script["put"] = [concurrent] * 100
    result = fail(capsys, {**SA, "name": "fic1", "retry_timeout": 1})
    assert result["msg"].startswith(
        "Failed to create federated credential 'fic1' on managed identity 'id1' in resource group 'rg1': "
        "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity:"
    )
    assert result["status"] == 409 and 1 < len(fics.writes) < 20


def test_a_missing_resource_group_is_not_retried(fics, capsys):
    fics.script["put"] = [arm_error(404, "ResourceGroupNotFound", "Resource group 'rg1' could not be found.")]
    result = fail(capsys, {**SA, "name": "fic1"})
    assert "ResourceGroupNotFound" in result["msg"] and fics.writes == [("put", "fic1")]


def test_delete_409_is_retried(fics, capsys):
    fics.add("fic1")
    fics.script["delete"] = [concurrent]
    assert run(capsys, {"name": "fic1", "state": "absent"})["changed"] is True
    assert fics.writes == [("delete", "fic1")] * 2 and fics.store == {}


def test_a_parallel_writer_creating_the_same_pair_is_adopted(fics, capsys):
    def someone_else_wins():
        fics.add("theirs")
        return arm_error(400, "Conflict", "Issuer and subject combination already exists for this Managed Identity.")

    fics.script["put"] = [someone_else_wins]
    result = run(capsys, {**SA, "name": "fic1"})
    assert result["changed"] is False and result["action"] == "adopt"
    assert result["federated_credential"]["name"] == "theirs" and list(fics.store) == ["theirs"]
    assert fics.calls == [("list", "id1"), ("put", "fic1"), ("list", "id1")]


def test_validation_errors_from_azure_are_reported_not_retried(fics, capsys):
    fics.script["put"] = [arm_error(400, "BadRequest", f"bad request while using {SECRET}")]
    result = fail(capsys, {**SA, "name": "fic1"})
    assert "BadRequest" in result["msg"] and len(fics.writes) == 1
    assert SECRET not in json.dumps(result)


def test_argument_spec_is_the_documented_one():
    import yaml

    documented = yaml.safe_load(federated_credential.DOCUMENTATION)["options"]
    assert set(documented) == set(federated_credential.ARGUMENT_SPEC)
    for name, spec in federated_credential.ARGUMENT_SPEC.items():
        assert documented[name]["type"] == spec["type"]
        assert documented[name].get("default") == spec.get("default")
