"""reconcile/identity_binding.py and the identity binding gateway's normalisation: every decision from one list of a
cluster's bindings (pure, no network), and the input rules."""

from __future__ import annotations

import json
import types

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.containerservice import models as aks_models

from ansible_collections.aks.workload_identity.plugins.module_utils import workload_identity as wi
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import ApiCalls
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import (
    IdentityBindings,
    normalize_identity_binding,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import CREATE, DELETE, NONE
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.identity_binding import (
    DesiredIdentityBinding,
    Outcome,
    canonical_identity_id,
    cluster_id,
    find_for_identity,
    module_result,
    parse_identity_id,
    plan,
    spec_name_errors,
    validate,
)

SUB = "00000000-0000-0000-0000-000000000001"
CLUSTER = f"/subscriptions/{SUB}/resourcegroups/rg-apps/providers/Microsoft.ContainerService/managedClusters/aks1"
ORDERS = (
    f"/subscriptions/{SUB}/resourceGroups/rg-apps/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-orders"
)
BILLING = (
    f"/subscriptions/{SUB}/resourceGroups/rg-apps/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-billing"
)
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def binding(name: str, identity_id: str = ORDERS, state: str = "Succeeded", client_id: str = "c-orders") -> dict:
    return {
        "id": f"{CLUSTER}/identityBindings/{name}",
        "name": name,
        "resource_group": "rg-apps",
        "cluster_name": "aks1",
        "identity_id": identity_id,
        "client_id": client_id,
        "principal_id": f"p-{client_id}",
        "tenant_id": TENANT,
        "issuer_url": f"https://ib.oic.prod-aks.azure.com/{TENANT}/{client_id}",
        "provisioning_state": state,
        "etag": "e1",
    }


def want(name: str = "idorders", identity_id: str | None = ORDERS, state: str = "present") -> DesiredIdentityBinding:
    return DesiredIdentityBinding("rg-apps", "aks1", name, identity_id, state)


# --- present ---------------------------------------------------------------------------------------------------------
def test_create_when_the_cluster_has_no_binding_of_the_name():
    decided = plan([binding("idbilling", BILLING, client_id="c-billing")], want())
    assert decided.action == CREATE and decided.changed and decided.before is None and decided.warnings == []
    assert decided.after["name"] == "idorders" and decided.after["identity_id"] == ORDERS
    assert decided.after["id"] is None and decided.after["issuer_url"] is None  # unknown without the cluster's ID


def test_create_predicts_the_ids_from_the_identity_and_the_cluster():
    identity = {"client_id": "c-orders", "principal_id": "p-orders", "tenant_id": TENANT}
    decided = plan([], want(), identity=identity, cluster=CLUSTER)
    assert decided.after == {
        **binding("idorders"),
        "client_id": "c-orders",
        "principal_id": "p-orders",
        "issuer_url": None,
        "provisioning_state": None,
        "etag": None,
    }
    assert decided.diff() == {"before": {}, "after": decided.after}


@pytest.mark.parametrize(
    "actual_id",
    [ORDERS, ORDERS.lower(), ORDERS.replace("resourceGroups", "resourcegroups"), ORDERS.upper()],
    ids=["same", "lower", "resourcegroups", "upper"],
)
def test_none_when_the_named_binding_maps_the_identity_in_any_case(actual_id):
    existing = binding("idorders", actual_id)
    decided = plan([binding("idbilling", BILLING), existing], want())
    assert decided.action == NONE and not decided.changed
    assert decided.before == existing and decided.after == existing and decided.warnings == []


def test_the_name_compares_without_case():
    assert plan([binding("IdOrders")], want()).action == NONE


@pytest.mark.parametrize("state", ["Failed", "Canceled"])
def test_a_failed_binding_is_left_alone_with_a_warning(state):
    decided = plan([binding("idorders", state=state)], want())
    assert decided.action == NONE
    assert len(decided.warnings) == 1 and repr(state) in decided.warnings[0] and "state: absent" in decided.warnings[0]


def test_a_binding_still_creating_is_not_written_again():
    decided = plan([binding("idorders", state="Creating")], want())
    assert decided.action == NONE and decided.warnings == []


def test_a_name_taken_by_another_identity_is_refused():
    with pytest.raises(WorkloadIdentityError) as caught:
        plan([binding("idorders", BILLING)], want())
    error = caught.value
    assert error.code == "IdentityBindingNameTaken"
    assert error.message.startswith("name: identity binding 'idorders' on AKS cluster 'aks1'")
    assert BILLING in error.message and ORDERS in error.message and "only be set when it is created" in error.message


def test_an_identity_bound_under_another_name_is_refused_with_that_name():
    with pytest.raises(WorkloadIdentityError) as caught:
        plan([binding("legacy", ORDERS.lower())], want())
    error = caught.value
    assert error.code == "IdentityAlreadyBound"
    assert error.message.startswith(f"name: managed identity '{ORDERS}' is already bound to AKS cluster 'aks1'")
    assert "'legacy'" in error.message and "Set name: legacy" in error.message


def test_the_name_clash_is_reported_before_the_identity_clash():
    with pytest.raises(WorkloadIdentityError) as caught:
        plan([binding("idorders", BILLING), binding("legacy", ORDERS)], want())
    assert caught.value.code == "IdentityBindingNameTaken"


# --- absent ----------------------------------------------------------------------------------------------------------
def test_delete_when_the_name_exists():
    existing = binding("idorders")
    decided = plan([existing], want(state="absent"))
    assert decided.action == DELETE and decided.before == existing and decided.after is None
    assert decided.diff() == {"before": existing, "after": {}}


def test_delete_by_name_alone_whatever_the_identity():
    assert plan([binding("idorders", BILLING)], want(identity_id=None, state="absent")).action == DELETE


def test_absent_is_a_no_op_when_the_name_does_not_exist():
    decided = plan([binding("idbilling", BILLING)], want(state="absent"))
    assert decided.action == NONE and decided.before is None and decided.after is None and decided.warnings == []


def test_absent_warns_when_the_identity_is_bound_under_another_name():
    decided = plan([binding("legacy")], want(state="absent"))
    assert decided.action == NONE
    assert len(decided.warnings) == 1 and "'legacy'" in decided.warnings[0] and "not deleted" in decided.warnings[0]


def test_absent_refuses_to_delete_another_identitys_binding():
    with pytest.raises(WorkloadIdentityError) as caught:
        plan([binding("idorders", BILLING)], want(state="absent"))
    assert caught.value.code == "IdentityBindingNameTaken" and "not deleted" in caught.value.message


def test_absent_while_the_binding_is_being_deleted_is_a_no_op():
    decided = plan([binding("idorders", state="Deleting")], want(state="absent"))
    assert decided.action == NONE and decided.after is None


# --- find_for_identity -----------------------------------------------------------------------------------------------
def test_find_for_identity():
    bindings = [binding("idbilling", BILLING), binding("idorders", ORDERS)]
    assert find_for_identity(bindings, ORDERS.upper())["name"] == "idorders"
    assert find_for_identity(bindings, ORDERS.replace("id-orders", "id-other")) is None
    assert find_for_identity(bindings, None) is None
    assert find_for_identity([], ORDERS) is None


# --- input rules -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("desired", "fragment"),
    [
        (want(name="id-orders"), "name: must be 1-63 lower-case letters or digits"),
        (want(name="1orders"), "name: must be 1-63"),
        (want(name="Orders"), "name: must be 1-63"),
        (want(identity_id=None), "identity_id: is required"),
        (want(identity_id="/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v"), "identity_id:"),
        (want(identity_id=ORDERS.replace("rg-apps", "rg_apps")), "letters, digits and '-' only"),
        (want(identity_id=ORDERS.replace("id-orders", "id_orders")), "identity_id:"),
        (DesiredIdentityBinding("rg.", "aks1", "idorders", ORDERS), "resource_group:"),
        (DesiredIdentityBinding("rg-apps", "-aks", "idorders", ORDERS), "cluster_name:"),
    ],
)
def test_validate_refuses(desired, fragment):
    errors = validate(desired)
    assert any(fragment in e for e in errors), errors


def test_validate_accepts():
    assert validate(want()) == []
    assert validate(want(name="a" + "0" * 62)) == []
    assert validate(want(identity_id=None, state="absent")) == []
    assert validate(want(identity_id=ORDERS.lower())) == []


def test_identity_ids_are_parsed_and_spelt_as_the_spec_does():
    assert parse_identity_id(ORDERS) == (SUB, "rg-apps", "id-orders")
    assert parse_identity_id(ORDERS + "/") is None and parse_identity_id(None) is None
    assert canonical_identity_id(ORDERS.lower().replace("id-orders", "ID-Orders")) == ORDERS.replace(
        "id-orders", "ID-Orders"
    )


def test_spec_name_rule():
    assert spec_name_errors("id-orders-1", "identity_name") == []
    assert spec_name_errors("id_orders", "identity_name")[0].startswith("identity_name: identity bindings accept only")
    assert spec_name_errors("rg.apps", "identity_resource_group") != []


def test_default_name_passes_the_rule():
    for identity_name in ("id-orders", "ID_Orders", "123", "x" * 63):
        assert validate(want(name=wi.default_identity_binding_name(identity_name))) == []


def test_cluster_id_as_aks_spells_it():
    assert cluster_id(SUB, "rg-apps", "aks1") == CLUSTER


# --- normalisation and results ---------------------------------------------------------------------------------------
def test_normalize_identity_binding_from_the_sdk_model():
    model = aks_models.IdentityBinding(
        {
            "id": f"{CLUSTER}/identityBindings/idorders",
            "name": "idorders",
            "type": "Microsoft.ContainerService/managedClusters/identityBindings",
            "properties": {
                "managedIdentity": {
                    "resourceId": ORDERS,
                    "objectId": "p-c-orders",
                    "clientId": "c-orders",
                    "tenantId": TENANT,
                },
                "oidcIssuer": {"oidcIssuerUrl": f"https://ib.oic.prod-aks.azure.com/{TENANT}/c-orders"},
                "provisioningState": "Succeeded",
            },
            "eTag": "e1",
        }
    )
    assert normalize_identity_binding(model) == binding("idorders")


def test_normalize_identity_binding_of_a_sparse_body():
    assert normalize_identity_binding({"name": "x"}) == {
        "id": None,
        "name": "x",
        "resource_group": None,
        "cluster_name": None,
        "identity_id": None,
        "client_id": None,
        "principal_id": None,
        "tenant_id": None,
        "issuer_url": None,
        "provisioning_state": None,
        "etag": None,
    }


def test_module_result_carries_the_issuer_and_the_identitys_ids():
    existing = binding("idorders")
    result = module_result(Outcome(plan([existing], want()), existing))
    assert result["changed"] is False and result["action"] == NONE
    assert result["identity_binding"] == existing
    assert (result["issuer_url"], result["client_id"], result["principal_id"], result["tenant_id"]) == (
        existing["issuer_url"],
        "c-orders",
        "p-c-orders",
        TENANT,
    )
    assert result["credential_name"] == "aks-identity-binding"
    assert result["diff"] == {"before": existing, "after": existing}
    gone = module_result(Outcome(plan([existing], want(state="absent")), None))
    assert gone["identity_binding"] == {} and gone["issuer_url"] is None and gone["diff"]["after"] == {}


# --- the gateway, at the SDK boundary --------------------------------------------------------------------------------
class _Response:
    def __init__(self, status: int, code: str, message: str):
        self.status_code, self.reason, self.headers = status, "r", {}
        self._text = json.dumps({"error": {"code": code, "message": message}})
        self.content_type, self.request = "application/json", None

    def text(self, encoding=None):
        return self._text

    def body(self):
        return self._text.encode()


class _Poller:
    def __init__(self, result):
        self._result = result

    def wait(self, timeout=None):
        pass

    def done(self):
        return True

    def result(self):
        return self._result


class _Pages:
    def __init__(self, items):
        self.items = items

    def by_page(self):
        return iter([self.items])


class _Operations:
    """azure-mgmt-containerservice's identity_bindings, recording each call."""

    def __init__(self, bindings=(), missing: bool = False):
        self.bindings, self.missing, self.sent = list(bindings), missing, []

    def list_by_managed_cluster(self, resource_group, cluster_name):
        if self.missing:
            message = f"Can not perform requested operation on nested resource. Parent resource '{cluster_name}'"
            raise ResourceNotFoundError(response=_Response(404, "ParentResourceNotFound", message))
        return _Pages(self.bindings)

    def begin_create_or_update(self, resource_group, cluster_name, name, parameters, **kwargs):
        self.sent.append(("put", name, parameters.as_dict(), kwargs))
        return _Poller({**_rest(name), "properties": {**_rest(name)["properties"], "provisioningState": "Creating"}})

    def begin_delete(self, resource_group, cluster_name, name, **kwargs):
        self.sent.append(("delete", name, None, kwargs))
        return _Poller(None)


def _rest(name: str) -> dict:
    return {
        "id": f"{CLUSTER}/identityBindings/{name}",
        "name": name,
        "properties": {
            "managedIdentity": {
                "resourceId": ORDERS,
                "objectId": "p-c-orders",
                "clientId": "c-orders",
                "tenantId": TENANT,
            },
            "oidcIssuer": {"oidcIssuerUrl": f"https://ib.oic.prod-aks.azure.com/{TENANT}/c-orders"},
            "provisioningState": "Succeeded",
        },
        "eTag": "e1",
    }


def _azure(operations) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        containerservice=types.SimpleNamespace(identity_bindings=operations), polling_interval=0.5, calls=ApiCalls()
    )


def test_gateway_lists_and_counts_and_says_none_for_a_missing_cluster():
    azure = _azure(_Operations([_rest("idorders")]))
    assert IdentityBindings(azure).list("rg-apps", "aks1") == [binding("idorders")]
    assert azure.calls.as_dict() == {"containerservice.identity_bindings.list_by_managed_cluster": 1}
    assert IdentityBindings(_azure(_Operations(missing=True))).list("rg-apps", "aks1") is None


@pytest.mark.parametrize("wait", [True, False])
def test_gateway_create_sends_only_the_identity_and_the_polling_settings(wait):
    operations = _Operations()
    azure = _azure(operations)
    created = IdentityBindings(azure).create("rg-apps", "aks1", "idorders", ORDERS, wait=wait, timeout=30)
    assert created["provisioning_state"] == "Creating" and created["identity_id"] == ORDERS
    [(kind, name, body, kwargs)] = operations.sent
    assert (kind, name) == ("put", "idorders")
    assert body == {"properties": {"managedIdentity": {"resourceId": ORDERS}}}
    assert kwargs == {"polling_interval": 0.5, "polling": wait}
    assert azure.calls.as_dict() == {"containerservice.identity_bindings.begin_create_or_update": 1}


def test_gateway_delete_polls_as_asked():
    operations = _Operations()
    IdentityBindings(_azure(operations)).delete("rg-apps", "aks1", "idorders", wait=False)
    assert operations.sent == [("delete", "idorders", None, {"polling_interval": 0.5, "polling": False})]


def test_gateway_names_the_sdk_release_it_needs():
    azure = types.SimpleNamespace(containerservice=types.SimpleNamespace(), polling_interval=1.0, calls=ApiCalls())
    with pytest.raises(WorkloadIdentityError) as caught:
        IdentityBindings(azure).list("rg-apps", "aks1")
    assert caught.value.code == "MissingRequiredLibrary" and "azure-mgmt-containerservice >= 41.3.0" in str(
        caught.value
    )
