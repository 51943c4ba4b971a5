# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The domain rules of Microsoft Entra Workload ID on AKS, written once: constants and pure functions.

Private to this collection. Citations "azure-behaviour §n" refer to the sections of docs/azure-behaviour.md,
which gives the public source of each fact; every rule names where it comes from.
"""

from __future__ import annotations

import hashlib
import re
import typing as t
from urllib.parse import urlsplit

# --- Kubernetes labels and annotations read by the azure-workload-identity webhook --------------------------
# https://azure.github.io/azure-workload-identity/docs/topics/service-account-labels-and-annotations.html
ANNOTATION_PREFIX = "azure.workload.identity/"
ANNOTATION_CLIENT_ID = "azure.workload.identity/client-id"  # ServiceAccount
ANNOTATION_TENANT_ID = "azure.workload.identity/tenant-id"  # ServiceAccount
ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION = "azure.workload.identity/service-account-token-expiration"  # SA, pod
LABEL_USE = "azure.workload.identity/use"  # pod template label; only labelled pods are mutated
LABEL_USE_VALUE = "true"
ANNOTATION_INJECT_PROXY_SIDECAR = "azure.workload.identity/inject-proxy-sidecar"  # pod
ANNOTATION_PROXY_SIDECAR_PORT = "azure.workload.identity/proxy-sidecar-port"  # pod
ANNOTATION_SKIP_CONTAINERS = "azure.workload.identity/skip-containers"  # pod; "c1;c2"
DEFAULT_PROXY_SIDECAR_PORT = 8000
# Same page: projected token expirationSeconds, default 3600, "acceptable range: 3600 - 86400".
DEFAULT_TOKEN_EXPIRATION = 3600
MIN_TOKEN_EXPIRATION = 3600
MAX_TOKEN_EXPIRATION = 86400

# What the webhook injects into a mutated pod (the same names azure-identity reads).
ENV_CLIENT_ID = "AZURE_CLIENT_ID"
ENV_TENANT_ID = "AZURE_TENANT_ID"
ENV_FEDERATED_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"
ENV_AUTHORITY_HOST = "AZURE_AUTHORITY_HOST"
TOKEN_FILE_PATH = "/var/run/secrets/azure/tokens/azure-identity-token"

# --- Federated identity credentials (azure-behaviour §4) ------------------------------------------------------
DEFAULT_AUDIENCE = "api://AzureADTokenExchange"  # azure-behaviour §4: "should be api://AzureADTokenExchange"
# azure-behaviour §4: on AKS the subject is system:serviceaccount:{namespace}:{serviceaccount}.
SUBJECT_PREFIX = "system:serviceaccount:"
# azure-behaviour §1 / §4: 3-120 characters, alphanumeric, dash or underscore, first character alphanumeric.
FEDERATED_CREDENTIAL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9]{1}[a-zA-Z0-9-_]{2,119}$")
FEDERATED_CREDENTIAL_NAME_MIN = 3
FEDERATED_CREDENTIAL_NAME_MAX = 120
MAX_ISSUER_LENGTH = 600  # azure-behaviour §4
MAX_SUBJECT_LENGTH = 600  # azure-behaviour §4
MAX_AUDIENCE_LENGTH = 600  # azure-behaviour §4
MAX_FEDERATED_CREDENTIALS_PER_IDENTITY = 20  # azure-behaviour §4

# --- Names ----------------------------------------------------------------------------------------------------
# azure-behaviour §1: AKS managedClusters name, 1-63 characters.
# User-assigned identity names: 3-128 alphanumerics, '-' or '_', starting with a letter or digit
# (learn.microsoft.com/azure/templates/microsoft.managedidentity/userassignedidentities).
IDENTITY_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}$")
CLUSTER_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9]$|^[a-zA-Z0-9][-_a-zA-Z0-9]{0,61}[a-zA-Z0-9]$")
# azure-behaviour §1: Key Vault secret name accepted by SetSecret.
KEYVAULT_SECRET_NAME_PATTERN = re.compile(r"^[0-9a-zA-Z-]+$")
# Kubernetes: namespaces are RFC 1123 labels, ServiceAccount names RFC 1123 subdomains
# (k8s.io/apimachinery/pkg/util/validation IsDNS1123Label / IsDNS1123Subdomain).
DNS1123_LABEL_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_SUBDOMAIN_MAX = 253
UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# --- Key Vault access policies ---------------------------------------------------------------------------------
# keyvault.json SecretPermissions, in the order the portal lists them.
SECRET_PERMISSIONS = ("get", "list", "set", "delete", "backup", "restore", "recover", "purge")


def sort_permissions(permissions: t.Iterable[str]) -> list[str]:
    """Lower-cased (Key Vault compares them without case), without duplicates, in the portal's order."""
    unique = {str(p).lower() for p in permissions}
    order = {name: index for index, name in enumerate(SECRET_PERMISSIONS)}
    return sorted(unique, key=lambda p: (order.get(p, len(order)), p))


# --- Built-in Azure roles (same GUID in every tenant) -------------------------------------------------------
ROLE_READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"  # azure-behaviour §9 (also in the CLI recordings)
ROLE_KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"  # azure-behaviour §9
ROLE_KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"  # azure-behaviour §9
ROLE_KEY_VAULT_ADMINISTRATOR = "00482a5a-887f-4fb3-b363-3b7fe8e74483"  # azure-behaviour §9
# learn.microsoft.com/azure/role-based-access-control/built-in-roles/general ("Contributor", id ...dd24c)
ROLE_CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
BUILTIN_ROLES: dict[str, str] = {
    "Reader": ROLE_READER,
    "Contributor": ROLE_CONTRIBUTOR,
    "Key Vault Secrets User": ROLE_KEY_VAULT_SECRETS_USER,
    "Key Vault Secrets Officer": ROLE_KEY_VAULT_SECRETS_OFFICER,
    "Key Vault Administrator": ROLE_KEY_VAULT_ADMINISTRATOR,
}
_ROLE_DEFINITION_ID = re.compile(
    r"^(?P<scope>/.*)?/providers/Microsoft\.Authorization/roleDefinitions/(?P<guid>[0-9a-fA-F-]{36})$", re.IGNORECASE
)


# --- Subjects -------------------------------------------------------------------------------------------------
def service_account_subject(namespace: str, service_account: str) -> str:
    """The ``sub`` claim Kubernetes puts in a ServiceAccount token, which a federated credential must equal."""
    return f"{SUBJECT_PREFIX}{namespace}:{service_account}"


def parse_service_account_subject(subject: str) -> tuple[str, str] | None:
    """``(namespace, service_account)`` from a ServiceAccount subject, or ``None`` when it is not one."""
    if not isinstance(subject, str) or not subject.startswith(SUBJECT_PREFIX):
        return None
    parts = subject[len(SUBJECT_PREFIX) :].split(":")
    if len(parts) != 2 or validate_namespace(parts[0]) or validate_service_account_name(parts[1]):
        return None
    return parts[0], parts[1]


# --- Single-value checks; each returns a list of "field: rule" messages (empty when valid) -----------------
def is_uuid(value: t.Any) -> bool:
    """True for a canonical 8-4-4-4-12 hexadecimal GUID (client IDs, tenant IDs, subscription IDs)."""
    return isinstance(value, str) and bool(UUID_PATTERN.match(value))


def validate_uuid(value: t.Any, field: str) -> list[str]:
    if not is_uuid(value):
        return [f"{field}: must be a GUID like 00000000-0000-0000-0000-000000000000, got {value!r}"]
    return []


def validate_namespace(value: t.Any, field: str = "namespace") -> list[str]:
    return _dns1123(value, field, DNS1123_LABEL_PATTERN, DNS1123_LABEL_MAX, "an RFC 1123 label")


def validate_service_account_name(value: t.Any, field: str = "service_account") -> list[str]:
    return _dns1123(value, field, DNS1123_SUBDOMAIN_PATTERN, DNS1123_SUBDOMAIN_MAX, "an RFC 1123 subdomain")


def _dns1123(value: t.Any, field: str, pattern: re.Pattern[str], limit: int, kind: str) -> list[str]:
    if not isinstance(value, str) or not value:
        return [f"{field}: is required"]
    errors = []
    if len(value) > limit:
        errors.append(f"{field}: must be at most {limit} characters, got {len(value)}")
    if not pattern.match(value):
        errors.append(f"{field}: must be {kind} (lower-case letters, digits and '-', starting and ending alphanumeric)")
    return errors


def validate_cluster_name(value: t.Any, field: str = "cluster_name") -> list[str]:
    if not isinstance(value, str) or not CLUSTER_NAME_PATTERN.match(value):
        return [f"{field}: must be 1-63 letters, digits, '-' or '_', starting and ending alphanumeric"]
    return []


def validate_identity_name(value: t.Any, field: str = "name") -> list[str]:
    if not isinstance(value, str) or not IDENTITY_NAME_PATTERN.match(value):
        return [f"{field}: must be 3-128 letters, digits, '-' or '_', starting with a letter or digit"]
    return []


# ARM's rule for resource group names (Microsoft.Resources naming rules): 1-90 letters, digits, '_', '-', '.',
# '(' or ')', not ending with a period.
RESOURCE_GROUP_NAME_PATTERN = re.compile(r"^[\w\-.()]{1,90}$")


def validate_resource_group_name(value: t.Any, field: str = "resource_group") -> list[str]:
    if not isinstance(value, str) or not RESOURCE_GROUP_NAME_PATTERN.match(value) or value.endswith("."):
        return [
            f"{field}: {value!r} is not a valid resource group name (1-90 letters, digits, '_', '-', '.', '(' or ')', "
            "not ending with '.')"
        ]
    return []


def validate_federated_credential_name(value: t.Any, field: str = "name") -> list[str]:
    if not isinstance(value, str) or not value:
        return [f"{field}: is required"]
    if not FEDERATED_CREDENTIAL_NAME_MIN <= len(value) <= FEDERATED_CREDENTIAL_NAME_MAX:
        return [f"{field}: must be 3-120 characters, got {len(value)}"]
    if not FEDERATED_CREDENTIAL_NAME_PATTERN.match(value):
        return [f"{field}: must be letters, digits, '-' or '_' and start with a letter or digit"]
    return []


def validate_token_expiration(value: t.Any, field: str = "token_expiration") -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{field}: must be a whole number of seconds"]
    if not MIN_TOKEN_EXPIRATION <= value <= MAX_TOKEN_EXPIRATION:
        return [f"{field}: must be between {MIN_TOKEN_EXPIRATION} and {MAX_TOKEN_EXPIRATION} seconds, got {value}"]
    return []


def validate_keyvault_secret_name(value: t.Any, field: str = "secret_name") -> list[str]:
    if not isinstance(value, str) or not KEYVAULT_SECRET_NAME_PATTERN.match(value):
        return [f"{field}: must be letters, digits and '-' only"]
    return []


def _claim_value(value: t.Any, field: str, limit: int) -> list[str]:
    """Rules shared by issuer, subject and audience (azure-behaviour §4): required, length, no wildcards, no
    padding."""
    if not isinstance(value, str) or not value:
        return [f"{field}: is required"]
    errors = []
    if len(value) > limit:
        errors.append(f"{field}: must be at most {limit} characters, got {len(value)}")
    if value != value.strip():
        # azure-behaviour §4: whitespace around the issuer blocks the exchange; the claims are compared exactly.
        errors.append(f"{field}: must not start or end with whitespace")
    if "*" in value:
        errors.append(f"{field}: wildcards are not supported")  # azure-behaviour §4: no wildcards in any property
    return errors


def validate_issuer(value: t.Any, field: str = "issuer") -> list[str]:
    errors = _claim_value(value, field, MAX_ISSUER_LENGTH)
    if errors and errors[0].endswith("is required"):
        return errors
    # azure-behaviour §4 leaves a server-side https check UNVERIFIED; OIDC discovery needs https and every AKS
    # issuer is https, so we require it rather than let a token exchange fail later.
    parts = urlsplit(value.strip())
    if parts.scheme != "https" or not parts.netloc:
        errors.append(f"{field}: must be an https URL")
    return errors


def validate_subject(value: t.Any, field: str = "subject") -> list[str]:
    return _claim_value(value, field, MAX_SUBJECT_LENGTH)


def validate_audiences(value: t.Any, field: str = "audiences") -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        return [f"{field}: must be a list with exactly one audience"]
    if len(value) != 1:
        # azure-behaviour §4: 400 "Federated identity credentials must have exactly one audience."
        return [f"{field}: must contain exactly one audience, got {len(value)}"]
    return _claim_value(value[0], f"{field}[0]", MAX_AUDIENCE_LENGTH)


def validate_federated_credential(
    name: t.Any, issuer: t.Any, subject: t.Any, audiences: t.Any = (DEFAULT_AUDIENCE,)
) -> list[str]:
    """Every rule Entra applies to a federated identity credential (azure-behaviour §4), as "field: rule" messages."""
    audiences = list(audiences) if isinstance(audiences, tuple) else audiences
    return [
        *validate_federated_credential_name(name),
        *validate_issuer(issuer),
        *validate_subject(subject),
        *validate_audiences(audiences),
    ]


def validate_service_account_annotations(
    client_id: t.Any, tenant_id: t.Any = None, token_expiration: t.Any = None
) -> list[str]:
    """Values the webhook reads from a workload identity ServiceAccount."""
    errors = validate_uuid(client_id, "client_id")
    if tenant_id is not None:
        errors += validate_uuid(tenant_id, "tenant_id")
    if token_expiration is not None:
        errors += validate_token_expiration(token_expiration)
    return errors


# --- Near misses: values that look equal to a person but not to Entra ---------------------------------------
def _padding(value: str) -> tuple[str, str]:
    stripped = value.strip()
    start = value.find(stripped) if stripped else len(value)
    return value[:start], value[start + len(stripped) :]


def _cosmetic_differences(a: str, b: str, *, trailing_slash: bool) -> list[str] | None:
    """What separates two different strings that are equal once whitespace, slashes and case are ignored."""
    reasons = []
    if _padding(a) != _padding(b):
        reasons.append("surrounding whitespace")
    a, b = a.strip(), b.strip()
    if trailing_slash:
        if len(a) - len(a.rstrip("/")) != len(b) - len(b.rstrip("/")):
            reasons.append("a trailing slash")
        a, b = a.rstrip("/"), b.rstrip("/")
    if a != b and a.lower() == b.lower():
        reasons.append("letter case")
    return reasons if a.lower() == b.lower() and reasons else None


def issuer_near_miss(configured: str | None, presented: str | None) -> str | None:
    """Why two issuers that differ only cosmetically do not match, or ``None`` (equal, or really different).

    Entra compares the federated credential's issuer with the token's ``iss`` exactly (azure-behaviour §4); AKS
    issuers end with a slash (azure-behaviour §5), and a missing trailing slash is the classic AADSTS700211.
    """
    if not isinstance(configured, str) or not isinstance(presented, str) or configured == presented:
        return None
    reasons = _cosmetic_differences(configured, presented, trailing_slash=True)
    if not reasons:
        return None
    return (
        f"issuers {configured!r} and {presented!r} differ only by {' and '.join(reasons)}; "
        "Entra compares the issuer exactly (AADSTS700211)"
    )


def subject_near_miss(configured: str | None, presented: str | None) -> str | None:
    """Why two subjects that differ only cosmetically do not match, or ``None``.

    Subject matching is case-sensitive (azure-behaviour §4, AADSTS7002138); a swapped namespace and ServiceAccount
    name is another mistake worth naming.
    """
    if not isinstance(configured, str) or not isinstance(presented, str) or configured == presented:
        return None
    reasons = _cosmetic_differences(configured, presented, trailing_slash=False)
    if reasons:
        return (
            f"subjects {configured!r} and {presented!r} differ only by {' and '.join(reasons)}; "
            "Entra compares the subject exactly and case-sensitively (AADSTS7002138)"
        )
    parsed_a = parse_service_account_subject(configured.strip())
    parsed_b = parse_service_account_subject(presented.strip())
    if parsed_a and parsed_b and parsed_a == parsed_b[::-1]:
        return f"subjects {configured!r} and {presented!r} have the namespace and ServiceAccount name swapped"
    return None


# --- Names we choose --------------------------------------------------------------------------------------------
def _short_hash(*values: str) -> str:
    return hashlib.sha256("\x00".join(values).encode("utf-8")).hexdigest()[:8]


def default_federated_credential_name(cluster_or_issuer: str, namespace: str, service_account: str) -> str:
    """A deterministic federated credential name for one (cluster, namespace, ServiceAccount) that obeys the name
    rule of azure-behaviour §4.

    ``<cluster>-<namespace>-<service account>-<hash>``: characters the name rule forbids (the dots a
    ServiceAccount name may hold) become ``-``, an issuer URL is shown as ``issuer``, the head is cut so the
    whole stays within 120 characters, and the hash of the full input keeps two inputs that read the same
    after that (``a.b`` and ``a-b``, ``c-ns`` + ``x`` and ``c`` + ``ns-x``) apart.
    """
    origin = "issuer" if "://" in cluster_or_issuer else cluster_or_issuer
    suffix = _short_hash(cluster_or_issuer, namespace, service_account)
    head = re.sub(r"[^a-zA-Z0-9_-]+", "-", f"{origin}-{namespace}-{service_account}")
    head = re.sub(r"-{2,}", "-", head).lstrip("-_")
    head = head[: FEDERATED_CREDENTIAL_NAME_MAX - 1 - len(suffix)].rstrip("-_")
    return f"{head}-{suffix}" if head else f"fic-{suffix}"


# --- Role definitions -----------------------------------------------------------------------------------------
def role_definition_id(subscription_id: str, role: str) -> str:
    """The roleDefinitionId ARM expects for a built-in role name or GUID (azure-behaviour §9)."""
    guid = BUILTIN_ROLES.get(role, role)
    if not is_uuid(guid):
        raise ValueError(f"role: {role!r} is neither a known built-in role name nor a role definition GUID")
    return f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{guid.lower()}"


def role_definition_guid(value: str) -> str | None:
    """The GUID at the end of a roleDefinitionId (any scope), a bare GUID, or a known role name."""
    if value in BUILTIN_ROLES:
        return BUILTIN_ROLES[value]
    if is_uuid(value):
        return value.lower()
    match = _ROLE_DEFINITION_ID.match(value or "")
    return match.group("guid").lower() if match and is_uuid(match.group("guid")) else None
