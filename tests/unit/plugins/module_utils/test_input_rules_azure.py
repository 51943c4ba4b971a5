"""The shared input rules the Azure modules added to workload_identity.py: key vault names, wait and retry bounds,
and Kubernetes ServiceAccount subjects. Each rule with values it must accept and refuse, and the message naming the
option and the rule."""

from __future__ import annotations

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    MAX_WAIT_SECONDS,
    validate_keyvault_name,
    validate_service_account_subject,
    validate_wait_timeout,
)


# --- Key Vault names: 3-24 letters, digits and '-', a letter first, a letter or digit last, no '--' -------------
@pytest.mark.parametrize("name", ["kv1", "kv-wid-rbac", "KV-Mixed-Case-9", "a" * 24, "a-b"])
def test_keyvault_names_that_azure_accepts(name):
    assert validate_keyvault_name(name) == []


@pytest.mark.parametrize(
    "name",
    [
        "kv",  # too short
        "k" * 25,  # too long
        "1kv",  # starts with a digit
        "-kv",  # starts with a hyphen
        "kv-",  # ends with a hyphen
        "kv--1",  # two hyphens in a row
        "kv_1",  # underscore
        "kv.1",  # period
        "kv 1",  # space
        "ké1",  # not ASCII
        "",
        None,
        12345,
    ],
)
def test_keyvault_names_that_azure_refuses(name):
    (message,) = validate_keyvault_name(name, "vault_name")
    assert message.startswith(f"vault_name: {name!r} is not a valid key vault name (3-24 letters, digits and '-'")


def test_keyvault_name_errors_name_the_field_given():
    assert validate_keyvault_name("kv", "vault_id")[0].startswith("vault_id: ")


# --- Waits and retries: a number of seconds up to a day ---------------------------------------------------------
@pytest.mark.parametrize("value", [1, 60, 1800, 1.5, MAX_WAIT_SECONDS, None])
def test_wait_timeouts_within_bounds(value):
    assert validate_wait_timeout(value) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "wait_timeout: must be between 1 and 86400 seconds, got 0"),
        (-5, "wait_timeout: must be between 1 and 86400 seconds, got -5"),
        (MAX_WAIT_SECONDS + 1, "wait_timeout: must be between 1 and 86400 seconds, got 86401"),
        (10**12, "wait_timeout: must be between 1 and 86400 seconds, got 1e+12"),
        (True, "wait_timeout: must be a number"),
        ("60", "wait_timeout: must be a number"),
    ],
)
def test_wait_timeouts_out_of_bounds(value, message):
    assert validate_wait_timeout(value) == [message]


def test_retry_timeouts_may_be_zero():
    assert validate_wait_timeout(0, "retry_timeout", low=0) == []
    assert validate_wait_timeout(-0.5, "retry_timeout", low=0) == [
        "retry_timeout: must be between 0 and 86400 seconds, got -0.5"
    ]


# --- Subjects: a ServiceAccount's exactly as Kubernetes writes it, anything else untouched ------------------------
@pytest.mark.parametrize(
    "subject",
    [
        "system:serviceaccount:orders:api",
        "system:serviceaccount:kube-system:api.v2",
        "system:serviceaccount:a:b",
        "repo:contoso/app:environment:prod",  # GitHub Actions: not a Kubernetes subject, not this rule's business
        "s1",
        None,
    ],
)
def test_subjects_accepted(subject):
    assert validate_service_account_subject(subject) == []


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        ("system:serviceaccount:orders:API", "subject: name 'API' must be an RFC 1123 subdomain"),
        ("system:serviceaccount:orders:api_v2", "subject: name 'api_v2' must be an RFC 1123 subdomain"),
        ("system:serviceaccount:Orders:api", "subject: namespace 'Orders' must be an RFC 1123 label"),
        ("system:serviceaccount:orders.eu:api", "subject: namespace 'orders.eu' must be an RFC 1123 label"),
        ("system:serviceaccount:" + "n" * 64 + ":api", "subject: namespace 'nnnn"),
        ("system:serviceaccount::api", "subject: namespace '' is required"),
        ("system:serviceaccount:orders:", "subject: name '' is required"),
        ("system:serviceaccount:orders", "subject: must be system:serviceaccount:<namespace>:<service account>"),
        ("system:serviceaccount:a:b:c", "subject: must be system:serviceaccount:<namespace>:<service account>"),
        ("system:serviceaccounts:orders", "(lower case, singular 'serviceaccount')"),
        ("System:ServiceAccount:orders:api", "(lower case, singular 'serviceaccount')"),
        ("SYSTEM:SERVICEACCOUNT:ORDERS:API", "(lower case, singular 'serviceaccount')"),
    ],
)
def test_subjects_refused(subject, message):
    errors = validate_service_account_subject(subject)
    assert errors and errors[0].startswith("subject: ") and message in errors[0], errors
