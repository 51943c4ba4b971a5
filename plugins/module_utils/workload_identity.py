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

# --- AKS identity bindings (azure-behaviour §10) -----------------------------------------------------------
# learn.microsoft.com/azure/aks/identity-bindings-concepts and .../identity-bindings: one binding maps one identity to
# one cluster; AKS keeps one credential with this name on the identity for all its bindings, and Kubernetes RBAC
# (this verb, on this API group, the resource being the identity's client ID) says which ServiceAccounts may use it.
IDENTITY_BINDING_CREDENTIAL_NAME = "aks-identity-binding"
IDENTITY_BINDING_RBAC_API_GROUP = "cid.wi.aks.azure.com"
IDENTITY_BINDING_RBAC_VERB = "use-managed-identity"
# Pod annotation: the webhook's custom token endpoint annotation, "use-" + the suffix AKS configures
# (github.com/Azure/azure-workload-identity pkg/webhook/webhook.go, v1.6.0: NewPodMutator).
ANNOTATION_USE_IDENTITY_BINDING = "azure.workload.identity/use-identity-binding"
# What the webhook adds to a pod using the token proxy (pkg/webhook/consts.go, v1.6.0).
ENV_KUBERNETES_TOKEN_PROXY = "AZURE_KUBERNETES_TOKEN_PROXY"
ENV_KUBERNETES_SNI_NAME = "AZURE_KUBERNETES_SNI_NAME"
ENV_KUBERNETES_CA_FILE = "AZURE_KUBERNETES_CA_FILE"
# Spec (aks/stable/2026-04-01 managedClusters.json, identityBindingName): pattern "^[a-z][a-z0-9]{0,63}$" and
# maxLength 63, so 1-63 lower-case letters or digits, starting with a letter.
IDENTITY_BINDING_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,62}$")
IDENTITY_BINDING_NAME_MAX = 63
FEDERATIONS = ("federated_credential", "identity_binding")  # how a workload's identity trusts its tokens

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


def validate_identity_binding_name(value: t.Any, field: str = "name") -> list[str]:
    if not isinstance(value, str) or not IDENTITY_BINDING_NAME_PATTERN.match(value):
        return [f"{field}: must be 1-{IDENTITY_BINDING_NAME_MAX} lower-case letters or digits, starting with a letter"]
    return []


def default_identity_binding_name(identity_name: str) -> str:
    """A binding name derived from the identity's name: its letters and digits, lower-cased, 63 at most, led by a
    letter. Two identities whose names differ only in '-', '_' or case map to the same name: the plan finds the
    binding by identity first, and refuses a clash by name."""
    kept = re.sub(r"[^a-z0-9]", "", identity_name.lower())
    if not kept or not kept[0].isalpha():
        kept = "id" + kept
    return kept[:IDENTITY_BINDING_NAME_MAX]


def identity_binding_role_name(client_id: str) -> str:
    """The ClusterRole (and ClusterRoleBinding) this collection names for one identity's binding: the client ID
    keeps it unique per identity and stable across runs."""
    return f"azure-wi-identity-binding-{client_id.lower()}"


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


# --- General values: numbers, URLs, Azure locations and tags, string maps -------------------------------------
def validate_number(value: t.Any, field: str, low: float, high: float, unit: str = "") -> list[str]:
    """A number (not a boolean) within ``[low, high]``; ``None`` (omitted) passes."""
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return [f"{field}: must be a number"]
    if not low <= value <= high:
        unit = f" {unit}" if unit else ""
        return [f"{field}: must be between {low:g} and {high:g}{unit}, got {value:g}"]
    return []


def validate_https_url(value: t.Any, field: str, *, query: bool = False, path: bool = True) -> list[str]:
    """An ``https://host[:port][/path]`` URL (a query only when ``query``, a path only when ``path``); never a
    fragment or user information."""
    if not isinstance(value, str) or not value:
        return [f"{field}: is required"]
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return [f"{field}: is not a valid URL"]
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in value):
        return [f"{field}: must be an https URL with a host name"]
    if parts.username or parts.password:
        return [f"{field}: must not hold a user name or password"]
    if parts.fragment or (parts.query and not query):
        return [f"{field}: must not have a {'fragment' if parts.fragment else 'query'}"]
    if not path and parts.path not in ("", "/"):
        return [f"{field}: must not have a path"]
    return []


# Azure region names: "westeurope" as ARM returns them, or the display form "West Europe" ARM also accepts
# (https://learn.microsoft.com/rest/api/resources/subscriptions/list-locations).
LOCATION_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9]*( [A-Za-z0-9]+)*$")


def validate_location(value: t.Any, field: str = "location") -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str) or not LOCATION_PATTERN.match(value) or len(value) > 64:
        return [f"{field}: must be an Azure region name such as westeurope or 'West Europe'"]
    return []


# https://learn.microsoft.com/azure/azure-resource-manager/management/tag-resources#limits
MAX_TAGS = 50
MAX_TAG_NAME = 512
MAX_TAG_VALUE = 256
TAG_NAME_FORBIDDEN = "<>%&\\?/"


def validate_tags(value: t.Any, field: str = "tags") -> list[str]:
    """Azure's tag limits: at most 50, names 1-512 characters without ``<>%&\\?/`` and unique regardless of case,
    values strings of at most 256 characters."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [f"{field}: must be a dictionary of tag names and values"]
    errors = []
    if len(value) > MAX_TAGS:
        errors.append(f"{field}: Azure allows at most {MAX_TAGS} tags, got {len(value)}")
    seen: dict[str, str] = {}
    for name, tag_value in value.items():
        where = f"{field}.{name}" if isinstance(name, str) and name else f"{field}"
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            errors.append(f"{field}: tag names must be non-empty strings without surrounding whitespace")
            continue
        if len(name) > MAX_TAG_NAME:
            errors.append(f"{field}: tag names must be at most {MAX_TAG_NAME} characters, got {len(name)}")
        if any(char in TAG_NAME_FORBIDDEN for char in name):
            errors.append(f"{where}: tag names must not contain any of < > % & \\ ? /")
        if name.lower() in seen:
            errors.append(f"{where}: Azure tag names ignore case, so it is the same tag as {seen[name.lower()]!r}")
        seen[name.lower()] = name
        if not isinstance(tag_value, str):
            errors.append(f"{where}: tag values must be strings (quote numbers and booleans in YAML)")
        elif len(tag_value) > MAX_TAG_VALUE:
            errors.append(f"{where}: tag values must be at most {MAX_TAG_VALUE} characters, got {len(tag_value)}")
    return errors


def validate_string_map(value: t.Any, field: str, what: str = "values") -> list[str]:
    """A dictionary whose keys and values are all strings (Kubernetes labels, annotations and ConfigMap data are;
    Ansible would otherwise send ``None`` as null and ``1`` as a number)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [f"{field}: must be a dictionary"]
    errors = []
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            errors.append(f"{field}: keys must be non-empty strings")
        elif not isinstance(item, str):
            errors.append(f"{field}.{key}: {what} must be strings, got {_kind(item)} (quote it in YAML)")
    return errors


def _kind(value: t.Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "a dictionary" if isinstance(value, dict) else "a list" if isinstance(value, list) else type(value).__name__


# Key Vault names, https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules
# (Microsoft.KeyVault/vaults): 3-24 letters, digits and hyphens, starting with a letter, ending with a letter or
# digit, no two hyphens in a row.
KEYVAULT_NAME_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")


def validate_keyvault_name(value: t.Any, field: str = "vault_name") -> list[str]:
    if not isinstance(value, str) or not KEYVAULT_NAME_PATTERN.match(value) or "--" in value:
        return [
            f"{field}: {value!r} is not a valid key vault name (3-24 letters, digits and '-', starting with a letter, "
            "ending with a letter or digit, no '--')"
        ]
    return []


# Our bound, not Azure's: no operation these modules wait for takes a day, and Python's waits overflow on values
# near 2**63 nanoseconds (OverflowError: timeout value is too large) instead of failing cleanly.
MAX_WAIT_SECONDS = 86400


def validate_wait_timeout(value: t.Any, field: str = "wait_timeout", low: float = 1) -> list[str]:
    """Seconds to wait or retry: ``low`` (1, or 0 for "do not retry") to a day; ``None`` (omitted) passes."""
    return validate_number(value, field, low, MAX_WAIT_SECONDS, "seconds")


def validate_service_account_subject(value: t.Any, field: str = "subject") -> list[str]:
    """A subject that claims to be a Kubernetes ServiceAccount's (it starts with ``system:serviceaccount`` in any
    case) must be exactly the ``sub`` Kubernetes puts in its tokens, ``system:serviceaccount:<namespace>:<name>``
    with a valid namespace and name (azure-behaviour §4); anything else could never match a token. Other subjects
    (GitHub Actions' ``repo:...``) pass."""
    if not isinstance(value, str) or not value.lower().startswith(SUBJECT_PREFIX.rstrip(":")):
        return []
    shape = f"{field}: must be {SUBJECT_PREFIX}<namespace>:<service account> as in Kubernetes tokens"
    if not value.startswith(SUBJECT_PREFIX):
        return [f"{shape} (lower case, singular 'serviceaccount'), got {value!r}"]
    parts = value[len(SUBJECT_PREFIX) :].split(":")
    if len(parts) != 2:
        return [f"{shape}, got {value!r}"]
    return [
        f"{field}: {what} {part!r} {message.split(': ', 1)[1]}"
        for what, part, check in (
            ("namespace", parts[0], validate_namespace),
            ("name", parts[1], validate_service_account_name),
        )
        for message in check(part, field)
    ]


# Kubernetes object names. ConfigMaps, Deployments, StatefulSets, DaemonSets and CronJobs are RFC 1123 subdomains
# of at most 253 characters (k8s.io/apimachinery/pkg/api/validation NameIsDNSSubdomain, which
# kubernetes/kubernetes pkg/apis/apps/validation and pkg/apis/batch/validation use). A CronJob's name is at most 52:
# its controller appends 11 characters to name each Job, itself at most 63
# (https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/; enforced on create since
# kubernetes/kubernetes#52967).
CRONJOB_NAME_MAX = 52


def validate_object_name(value: t.Any, field: str = "name", limit: int = DNS1123_SUBDOMAIN_MAX) -> list[str]:
    """The name of a namespaced Kubernetes object: an RFC 1123 subdomain of at most ``limit`` characters."""
    return _dns1123(value, field, DNS1123_SUBDOMAIN_PATTERN, limit, "an RFC 1123 subdomain")


# Container image references as the container runtimes parse them, the grammar of
# https://github.com/distribution/reference (reference.go): [domain[:port]/]path[:tag][@digest], a path of
# lower-case components separated by '/', a tag of at most 128 word characters, '.' or '-', a digest
# algorithm:hex, the name at most 255 characters (NameTotalLengthMax). The kubelet refuses anything else
# (InvalidImageName), but only once the pod exists.
_IMAGE_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IMAGE_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE_PATTERN = re.compile(
    rf"^(?P<name>(?:{_IMAGE_DOMAIN_PART}(?:\.{_IMAGE_DOMAIN_PART})*(?::[0-9]+)?/)?"
    rf"{_IMAGE_PATH_PART}(?:/{_IMAGE_PATH_PART})*)"
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
IMAGE_NAME_MAX = 255


def validate_container_image(value: t.Any, field: str = "image") -> list[str]:
    if not isinstance(value, str) or not value:
        return [f"{field}: is required"]
    match = IMAGE_REFERENCE_PATTERN.match(value)
    if not match:
        return [
            f"{field}: must be a container image reference, [registry[:port]/]lower-case/path[:tag][@sha256:digest] "
            "without spaces, such as ghcr.io/azure/azure-workload-identity/msal-go:latest"
        ]
    if len(match.group("name")) > IMAGE_NAME_MAX:
        return [f"{field}: the image name before the tag must be at most {IMAGE_NAME_MAX} characters"]
    return []


# Key Vault object (secret) names: 1-127 letters, digits and '-'
# (https://learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates#object-identifiers;
# azure-behaviour §1 for the pattern).
KEYVAULT_OBJECT_NAME_MAX = 127


def validate_keyvault_object_name(value: t.Any, field: str = "secret_name") -> list[str]:
    if not isinstance(value, str) or not value:
        return [f"{field}: is required"]
    if len(value) > KEYVAULT_OBJECT_NAME_MAX or not KEYVAULT_SECRET_NAME_PATTERN.match(value):
        return [f"{field}: must be 1-{KEYVAULT_OBJECT_NAME_MAX} letters, digits or '-' (Key Vault's rule for names)"]
    return []


def validate_keyvault_url(value: t.Any, field: str = "keyvault_url") -> list[str]:
    """A vault's URL, ``https://<vault>.vault.azure.net/``: the SDK appends the object paths to it, so no path,
    query or fragment; https only (azure-core sends bearer tokens over TLS only)."""
    problems = validate_https_url(value, field, path=False)
    if problems:
        rule = problems[0].split(": ", 1)[1]
        return [f"{field}: must be the vault's https URL, as https://<vault>.vault.azure.net/ ({rule})"]
    return []


# The client credentials flow (a federated credential exchange is one) takes one scope: the resource's identifier
# followed by "/.default", such as https://vault.azure.net/.default
# (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow; Entra refuses other
# scopes with AADSTS1002012).
DEFAULT_SCOPE_SUFFIX = "/.default"


def validate_token_scope(value: t.Any, field: str = "scope") -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str) or any(char.isspace() for char in value):
        return [f"{field}: must be one scope, without spaces"]
    if not value.endswith(DEFAULT_SCOPE_SUFFIX) or value == DEFAULT_SCOPE_SUFFIX or "*" in value:
        return [
            f"{field}: must be a resource followed by {DEFAULT_SCOPE_SUFFIX}, such as https://vault.azure.net/.default "
            "(the client credentials flow takes nothing else)"
        ]
    return []


def validate_audience(value: t.Any, field: str = "audience") -> list[str]:
    """One audience of a ServiceAccount token, which a federated credential must trust (azure-behaviour §4)."""
    return _claim_value(value, field, MAX_AUDIENCE_LENGTH)


# ARM resource IDs: /subscriptions/<GUID>[/resourceGroups/<group>][/providers/<Namespace>/<type>/<name>...]
# (https://learn.microsoft.com/azure/azure-resource-manager/templates/template-functions-resource#resourceid).
_ARM_RESOURCE_ID = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)(?:/resourceGroups/(?P<group>[^/]+))?"
    r"(?:/providers/[A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z0-9]+)+(?:/[^/]+/[^/]+)+)?/?$",
    re.IGNORECASE,
)


def validate_arm_resource_id(value: t.Any, field: str) -> list[str]:
    if not isinstance(value, str) or not value:
        return [f"{field}: is required"]
    match = _ARM_RESOURCE_ID.match(value)
    if not match or any(char.isspace() or char in "?#%" for char in value):
        return [
            f"{field}: must be an Azure resource ID, /subscriptions/<GUID>/resourceGroups/<name> or "
            ".../providers/<Namespace>/<type>/<name>"
        ]
    errors = validate_uuid(match.group("subscription"), f"{field} (subscription)")
    if match.group("group") is not None:
        errors += validate_resource_group_name(match.group("group"), f"{field} (resource group)")
    return errors


# ARM api-versions are dates, YYYY-MM-DD, some with a -preview suffix
# (https://learn.microsoft.com/rest/api/azure/#request-uri: "api-version ... in YYYY-MM-DD format").
API_VERSION_PATTERN = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(-preview|-privatepreview|-beta)?$")


def validate_arm_api_version(value: t.Any, field: str = "api_version") -> list[str]:
    if value is not None and (not isinstance(value, str) or not API_VERSION_PATTERN.match(value)):
        return [f"{field}: must be an ARM api-version, a date YYYY-MM-DD with an optional -preview, got {value!r}"]
    return []


def validate_unique(values: t.Any, field: str, *, ignore_case: bool = False) -> list[str]:
    """Each entry of a list once (Azure names compare without regard to letter case: ``ignore_case``)."""
    if not isinstance(values, (list, tuple)):
        return []
    seen: dict[str, int] = {}
    errors = []
    for index, value in enumerate(values):
        key = value.lower() if ignore_case and isinstance(value, str) else repr(value)
        if key in seen:
            errors.append(f"{field}[{index}]: repeats {field}[{seen[key]}]; give each entry once")
        else:
            seen[key] = index
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
