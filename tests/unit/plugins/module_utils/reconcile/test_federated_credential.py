"""reconcile/federated_credential.py: every decision from one list of credentials (no network)."""

from __future__ import annotations

import json

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from ansible_collections.aks.workload_identity.plugins.module_utils import workload_identity as wi
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import (
    is_concurrent_write,
    is_duplicate_pair,
    is_parent_missing,
    normalize_credential,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile import (
    ADOPT,
    CREATE,
    DELETE,
    NONE,
    UPDATE,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.federated_credential import (
    DesiredCredential,
    desired_subject,
    plan,
    validate,
)

ISSUER = "https://westeurope.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/"
SUBJECT = "system:serviceaccount:orders:api"
IDENTITY = "/subscriptions/s/resourcegroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
AUD = [wi.DEFAULT_AUDIENCE]


def cred(name: str, issuer: str = ISSUER, subject: str = SUBJECT, audiences: list[str] | None = None) -> dict:
    return {
        "id": f"{IDENTITY}/federatedIdentityCredentials/{name}",
        "name": name,
        "issuer": issuer,
        "subject": subject,
        "audiences": audiences or list(AUD),
    }


def want(**kwargs) -> DesiredCredential:
    values = {"resource_group": "rg1", "identity_name": "id1", "issuer": ISSUER, "subject": SUBJECT, **kwargs}
    return DesiredCredential(**values)


# --- create -----------------------------------------------------------------------------------------------------------
def test_create_when_no_credential_has_the_pair():
    decided = plan([cred("other", subject="system:serviceaccount:x:y")], want(name="fic1"), identity=IDENTITY)
    assert decided.action == CREATE and decided.changed and decided.warnings == []
    assert decided.after == cred("fic1")
    assert decided.before is None


def test_create_uses_the_default_name_for_a_service_account_subject():
    decided = plan([], want(), identity=IDENTITY)
    expected = wi.default_federated_credential_name(ISSUER, "orders", "api")
    assert decided.after["name"] == expected
    assert wi.validate_federated_credential_name(expected) == []


def test_identity_not_found_plans_a_create_with_a_warning():
    decided = plan(None, want(name="fic1"), identity=IDENTITY)
    assert decided.action == CREATE
    assert any(w.startswith("identity_name: ") and "check mode" in w for w in decided.warnings)


def test_limit_of_twenty_fails_before_the_write_naming_the_count():
    existing = [cred(f"c{i:02d}", subject=f"system:serviceaccount:ns:sa{i}") for i in range(20)]
    with pytest.raises(WorkloadIdentityError) as caught:
        plan(existing, want(name="fic21"))
    assert caught.value.code == "FederatedCredentialLimitReached"
    assert "20 of the 20" in caught.value.message and "c00" in caught.value.message


def test_limit_does_not_block_an_update_or_a_no_op():
    existing = [cred(f"c{i:02d}", subject=f"system:serviceaccount:ns:sa{i}") for i in range(19)] + [cred("fic1")]
    assert plan(existing, want(name="fic1")).action == NONE
    assert plan(existing, want(name="c00", subject="system:serviceaccount:ns:new")).action == UPDATE


def test_nineteen_still_leave_room():
    existing = [cred(f"c{i:02d}", subject=f"system:serviceaccount:ns:sa{i}") for i in range(19)]
    assert plan(existing, want(name="fic20")).action == CREATE


# --- no-op, adopt, update -----------------------------------------------------------------------------------------------
def test_same_name_and_pair_is_nothing_to_do():
    decided = plan([cred("fic1")], want(name="fic1"))
    assert decided.action == NONE and not decided.changed
    assert decided.before == decided.after == cred("fic1")


def test_names_compare_case_insensitively_as_in_arm():
    assert plan([cred("FIC1")], want(name="fic1")).action == NONE


def test_pair_under_another_name_is_adopted_with_a_warning_naming_it():
    decided = plan([cred("made-by-az-cli")], want(name="fic1"))
    assert decided.action == ADOPT and not decided.changed
    assert decided.after == cred("made-by-az-cli")
    assert len(decided.warnings) == 1 and "'made-by-az-cli'" in decided.warnings[0]


def test_pair_under_another_name_without_a_name_given_is_silently_the_credential():
    decided = plan([cred("made-by-az-cli")], want())
    assert decided.action == NONE and decided.warnings == []
    assert decided.after["name"] == "made-by-az-cli"


def test_adopted_credential_with_other_audience_is_updated_under_its_own_name():
    decided = plan([cred("made-by-az-cli", audiences=["api://other"])], want(name="fic1"))
    assert decided.action == UPDATE
    assert decided.after == cred("made-by-az-cli")
    assert any("'made-by-az-cli'" in w for w in decided.warnings)


def test_audience_change_is_an_update():
    decided = plan([cred("fic1", audiences=["api://other"])], want(name="fic1"))
    assert decided.action == UPDATE
    assert decided.before["audiences"] == ["api://other"] and decided.after["audiences"] == AUD


@pytest.mark.parametrize(
    ("field", "value"),
    [("issuer", "https://other.example/issuer/"), ("subject", "system:serviceaccount:orders:worker")],
)
def test_issuer_or_subject_change_updates_in_place_by_name(field, value):
    decided = plan([cred("fic1", **{field: value})], want(name="fic1"))
    assert decided.action == UPDATE
    assert decided.before[field] == value and decided.after == cred("fic1")


def test_pair_elsewhere_wins_over_a_name_with_another_pair():
    existing = [cred("fic1", subject="system:serviceaccount:x:y"), cred("legacy")]
    decided = plan(existing, want(name="fic1"))
    assert decided.action == ADOPT and decided.after["name"] == "legacy"


# --- near misses ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("existing", "words"),
    [
        (cred("old", issuer=ISSUER.rstrip("/")), "trailing slash"),
        (cred("old", subject="system:serviceaccount:Orders:api"), "letter case"),
        (cred("old", subject="system:serviceaccount:api:orders"), "swapped"),
    ],
)
def test_cosmetic_differences_are_warned_about(existing, words):
    decided = plan([existing], want(name="fic1"))
    assert decided.action == CREATE
    assert len(decided.warnings) == 1
    assert "'old'" in decided.warnings[0] and words in decided.warnings[0] and "AADSTS70021" in decided.warnings[0]


def test_update_in_place_of_a_near_miss_also_warns():
    decided = plan([cred("fic1", issuer=ISSUER.rstrip("/"))], want(name="fic1"))
    assert decided.action == UPDATE and "trailing slash" in decided.warnings[0]


def test_really_different_credentials_are_not_near_misses():
    existing = [cred("a", issuer="https://other/"), cred("b", subject="system:serviceaccount:x:y")]
    assert plan(existing, want(name="fic1")).warnings == []


# --- absent ------------------------------------------------------------------------------------------------------------
def test_absent_by_name_deletes_that_credential():
    decided = plan([cred("fic1", subject="system:serviceaccount:x:y")], want(name="FIC1", state="absent"))
    assert decided.action == DELETE and decided.before["name"] == "fic1" and decided.after is None


def test_absent_by_name_when_missing_is_nothing():
    assert plan([cred("other")], want(name="fic1", state="absent")).action == NONE


def test_absent_without_name_deletes_by_pair_whatever_its_name():
    decided = plan([cred("x"), cred("made-by-az-cli", subject="system:serviceaccount:o:p")], want(state="absent"))
    assert decided.action == DELETE and decided.before["name"] == "x"


def test_absent_by_pair_warns_about_a_near_miss_it_leaves_alone():
    decided = plan([cred("old", issuer=ISSUER.rstrip("/"))], want(state="absent"))
    assert decided.action == NONE
    assert "'old'" in decided.warnings[0] and "not deleted" in decided.warnings[0]


def test_absent_on_a_missing_identity_is_nothing():
    decided = plan(None, want(name="fic1", state="absent"))
    assert decided.action == NONE and decided.warnings == []


# --- validation -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "x"}, "name: must be 3-120 characters"),
        ({"name": "-bad-name"}, "name: must be letters"),
        ({"name": "fic1", "issuer": "http://insecure/"}, "issuer: must be an https URL"),
        ({"name": "fic1", "issuer": None}, "issuer: is required"),
        ({"name": "fic1", "subject": "s" * 601}, "subject: must be at most 600"),
        ({"name": "fic1", "audiences": ("a", "b")}, "audiences: must contain exactly one audience, got 2"),
        ({"name": "fic1", "audiences": ()}, "got 0"),
        ({"subject": "repo:org/app:ref:refs/heads/main"}, "name: is required when the subject is not"),
        ({"state": "absent", "issuer": None}, "name: is required to delete"),
        ({"state": "absent", "name": "a"}, "name: must be 3-120"),
        ({"state": "absent", "issuer": "http://x/"}, "issuer: must be an https URL"),
    ],
)
def test_rules_are_checked_before_any_request(kwargs, fragment):
    errors = validate(want(**kwargs))
    assert any(fragment in e for e in errors), errors


def test_valid_requests_pass():
    assert validate(want()) == []
    assert validate(want(name="fic1", subject="repo:org/app:ref:refs/heads/main")) == []
    assert validate(want(state="absent")) == []
    assert validate(want(state="absent", name="fic1", issuer=None, subject=None)) == []


def test_subject_from_namespace_and_service_account():
    assert desired_subject(None, "orders", "api") == (SUBJECT, [])
    assert desired_subject(SUBJECT, None, None) == (SUBJECT, [])
    subject, errors = desired_subject(None, "Orders", "api")
    assert subject is None and errors and errors[0].startswith("namespace:")


# --- normalisation and error predicates -----------------------------------------------------------------------------------
def test_normalise_sdk_model_and_rest_dict():
    from azure.mgmt.msi.models import FederatedIdentityCredential

    model = FederatedIdentityCredential(issuer=ISSUER, subject=SUBJECT, audiences=AUD)
    assert normalize_credential(model) == {
        "id": None,
        "name": None,
        "issuer": ISSUER,
        "subject": SUBJECT,
        "audiences": AUD,
    }
    rest = {"id": "i", "name": "n", "properties": {"issuer": ISSUER, "subject": SUBJECT, "audiences": AUD}}
    assert normalize_credential(rest) == {
        "id": "i",
        "name": "n",
        "issuer": ISSUER,
        "subject": SUBJECT,
        "audiences": AUD,
    }


class _Response:
    def __init__(self, status: int, code: str, message: str):
        self.status_code, self.reason, self.headers = status, "r", {}
        self._text = json.dumps({"error": {"code": code, "message": message}})
        self.content_type, self.request = "application/json", None

    def text(self, encoding=None):
        return self._text

    def body(self):
        return self._text.encode()


def _error(status, code, message, cls=HttpResponseError):
    return cls(response=_Response(status, code, message))


CONCURRENT = _error(
    409,
    "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
    "Too many Federated Identity Credentials are written concurrently for the managed identity '/x'.",
    ResourceExistsError,
)
PARENT = _error(404, "NotFound", "The parent user-assigned identity doesn't exist.", ResourceNotFoundError)
PARENT_ARM = _error(404, "ParentResourceNotFound", "Parent resource 'id1' not found.", ResourceNotFoundError)
NO_GROUP = _error(404, "ResourceGroupNotFound", "Resource group 'rg1' could not be found.", ResourceNotFoundError)
DUPLICATE = _error(400, "Conflict", "Issuer and subject combination already exists for this Managed Identity.")
BAD = _error(400, "BadRequest", "Federated identity credentials must have exactly one audience.")


@pytest.mark.parametrize(
    ("exc", "concurrent", "parent_missing"),
    [
        (CONCURRENT, True, False),
        (PARENT, False, True),
        (PARENT_ARM, False, True),
        (NO_GROUP, False, False),
        (DUPLICATE, False, False),
        (BAD, False, False),
    ],
)
def test_the_write_errors_a_retry_may_cure(exc, concurrent, parent_missing):
    assert is_concurrent_write(exc) is concurrent
    assert is_parent_missing(exc) is parent_missing


def test_parent_missing_excludes_a_missing_resource_group():
    assert is_parent_missing(PARENT) and not is_parent_missing(NO_GROUP)


def test_duplicate_pair_is_recognised_by_its_message():
    assert is_duplicate_pair(DUPLICATE) and not is_duplicate_pair(BAD) and not is_duplicate_pair(None)
