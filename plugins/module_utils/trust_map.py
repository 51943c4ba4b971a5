# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The trust map of Microsoft Entra Workload ID on one cluster, and what is wrong with it: pure functions.

``build_trust_map(inventory)`` joins what wid_info read (plain dicts, no SDK objects) into the ownership map
namespace/ServiceAccount -> identity (client ID) -> federated credentials and identity bindings -> role grants,
with the workloads that run as each ServiceAccount, and lists findings. The inventory::

    clusters         [{resource_group, name, issuer_url, oidc_issuer_enabled, workload_identity_enabled}]
    issuer_urls      [str]            more issuers to treat as known (clusters not on AKS, other tenants)
    cluster_issuer   str | None       the issuer of the cluster whose objects are listed below (the API server's
                                      discovery document), None when it could not be read
    identities       [{id, name, resource_group, client_id, principal_id, tenant_id,
                       credentials: [{name, issuer, subject, audiences}] | None (not readable)}]
    identity_scope   str              where identities were looked for, for messages
    role_assignments [{scope, role_definition_id, role_name, principal_id}] | None (not read)
    namespaces       [str] | None     the namespaces listed (None: all)
    service_accounts [API dict of a ServiceAccount]            (camelCase, as the API server answers)
    workloads        [{kind, document: API dict}]              Deployment, StatefulSet, DaemonSet, Job, CronJob
    pods             [API dict of a Pod]
    pod_identity     {identities: [API dict], bindings: [API dict]} | None (not looked for)
    identity_bindings [{name, identity_id, client_id, issuer_url, provisioning_state, cluster_resource_group,
                       cluster_name}] | None (not read)    the AKS identity bindings of the clusters above
    cluster_roles    [{name, rules: [{api_groups, resources, verbs, resource_names}]}] | None (not read)
    cluster_role_bindings [{name, role_ref: {kind, name}, subjects: [{kind, name, namespace}]}] | None (not read)
                                      both as the RBAC gateways normalise them (snake_case)

A ServiceAccount reaches an identity by its own federated credential (the cluster's issuer, its subject, the
webhook's audience), by the identity's binding to this cluster when Kubernetes RBAC grants it the binding's verb on
the identity's client ID (any ClusterRole whose rules say so, bound by any ClusterRoleBinding: hand-made RBAC counts
as much as ours), or both.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import service_account_groups
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_CLIENT_ID,
    ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION,
    ANNOTATION_TENANT_ID,
    ANNOTATION_USE_IDENTITY_BINDING,
    DEFAULT_AUDIENCE,
    ENV_CLIENT_ID,
    IDENTITY_BINDING_CREDENTIAL_NAME,
    IDENTITY_BINDING_RBAC_API_GROUP,
    IDENTITY_BINDING_RBAC_VERB,
    LABEL_USE,
    LABEL_USE_VALUE,
    MAX_FEDERATED_CREDENTIALS_PER_IDENTITY,
    SUBJECT_PREFIX,
    is_uuid,
    issuer_near_miss,
    service_account_subject,
    subject_near_miss,
    validate_token_expiration,
)

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)

# Stable finding codes (documented in wid_info's RETURN); tests and pipelines key on them.
CREDENTIAL_ORPHANED = "credential-orphaned"
ISSUER_UNKNOWN = "issuer-unknown"
ISSUER_NEAR_MISS = "issuer-near-miss"
SUBJECT_NEAR_MISS = "subject-near-miss"
ANNOTATION_UNKNOWN_CLIENT_ID = "annotation-unknown-client-id"
ANNOTATION_NO_CREDENTIAL = "annotation-no-credential"
WORKLOAD_LABEL_MISSING = "workload-label-missing"
LABEL_ON_JOB_METADATA = "label-on-job-metadata"
LABEL_ON_SERVICEACCOUNT = "label-on-serviceaccount"
POD_CLIENT_ID_STALE = "pod-client-id-stale"
TOKEN_EXPIRATION_OUT_OF_RANGE = "token-expiration-out-of-range"
CREDENTIAL_BUDGET = "credential-budget"
POD_IDENTITY_LEFTOVER = "pod-identity-leftover"
IDENTITY_BINDING_CREDENTIAL_UNBOUND = "identity-binding-credential-unbound"
IDENTITY_BINDING_ACCESS_MISSING = "identity-binding-access-missing"
IDENTITY_BINDING_MISSING = "identity-binding-missing"
IDENTITY_BINDING_ACCESS_STALE = "identity-binding-access-stale"
CODES = (
    CREDENTIAL_ORPHANED,
    ISSUER_UNKNOWN,
    ISSUER_NEAR_MISS,
    SUBJECT_NEAR_MISS,
    ANNOTATION_UNKNOWN_CLIENT_ID,
    ANNOTATION_NO_CREDENTIAL,
    WORKLOAD_LABEL_MISSING,
    LABEL_ON_JOB_METADATA,
    LABEL_ON_SERVICEACCOUNT,
    POD_CLIENT_ID_STALE,
    TOKEN_EXPIRATION_OUT_OF_RANGE,
    CREDENTIAL_BUDGET,
    POD_IDENTITY_LEFTOVER,
    IDENTITY_BINDING_CREDENTIAL_UNBOUND,
    IDENTITY_BINDING_ACCESS_MISSING,
    IDENTITY_BINDING_MISSING,
    IDENTITY_BINDING_ACCESS_STALE,
)

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
DEFAULT_SERVICE_ACCOUNT = "default"  # a pod without serviceAccountName runs as "default" (Kubernetes API docs)
DEFAULT_CREDENTIAL_WARNING_THRESHOLD = 16
FINISHED_POD_PHASES = ("Succeeded", "Failed")
# aad-pod-identity (deprecated): pods opt in with this label, whose value is an AzureIdentityBinding's selector.
# https://azure.github.io/aad-pod-identity/docs/concepts/azureidentitybinding/
POD_IDENTITY_LABEL = "aadpodidbinding"

# Credential status in the map.
OK = "ok"
OTHER_CLUSTER = "other-cluster"

# How a ServiceAccount reaches an identity (map[].via): the names of workload_identity.FEDERATIONS, or both, or none.
VIA_CREDENTIAL = "federated_credential"
VIA_BINDING = "identity_binding"
VIA_BOTH = "both"
VIA_NONE = "none"
RBAC_WILDCARD = "*"  # RBAC's "any" in verbs, apiGroups and resources
# The groups every ServiceAccount's token carries, whatever its namespace (those two namespaces' lists share).
GROUPS_OF_EVERY_SERVICE_ACCOUNT = frozenset(service_account_groups("a")) & frozenset(service_account_groups("b"))


# --- Subjects of findings and map nodes ----------------------------------------------------------------------------
def k8s_subject(kind: str, namespace: str | None, name: str) -> str:
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def identity_subject(identity: t.Mapping[str, t.Any]) -> str:
    return f"UserAssignedIdentity/{identity.get('resource_group')}/{identity.get('name')}"


def credential_subject(identity: t.Mapping[str, t.Any], credential: t.Mapping[str, t.Any]) -> str:
    return (
        f"FederatedIdentityCredential/{identity.get('resource_group')}/{identity.get('name')}/{credential.get('name')}"
    )


def finding(severity: str, code: str, subject: str, message: str, fix: str) -> dict[str, str]:
    return {"severity": severity, "code": code, "subject": subject, "message": message, "fix": fix}


# --- Reading API dicts (camelCase, as the API server answers) ------------------------------------------------------
def _get(document: t.Any, *path: str) -> t.Any:
    node = document
    for step in path:
        if not isinstance(node, t.Mapping):
            return None
        node = node.get(step)
    return node


def _metadata(document: t.Any) -> tuple[str | None, str, dict[str, str], dict[str, str]]:
    metadata = _get(document, "metadata") or {}
    return (
        metadata.get("namespace"),
        metadata.get("name") or "",
        dict(metadata.get("labels") or {}),
        dict(metadata.get("annotations") or {}),
    )


def _owner(document: t.Any) -> dict[str, str] | None:
    owners = _get(document, "metadata", "ownerReferences") or []
    controller = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    return {"kind": controller.get("kind"), "name": controller.get("name")} if controller else None


def opts_in_to_identity_binding(annotations: t.Any) -> bool:
    """Whether pod annotations ask the webhook for the identity binding's token proxy (read as the gateways'
    normalize_workload reads it)."""
    value = annotations.get(ANNOTATION_USE_IDENTITY_BINDING) if isinstance(annotations, t.Mapping) else None
    return str(value or "").lower() == "true"


def normalize_service_account(document: t.Any) -> dict[str, t.Any]:
    namespace, name, labels, annotations = _metadata(document)
    return {
        "namespace": namespace,
        "name": name,
        "labels": labels,
        "annotations": annotations,
        "client_id": annotations.get(ANNOTATION_CLIENT_ID),
        "tenant_id": annotations.get(ANNOTATION_TENANT_ID),
        "token_expiration": annotations.get(ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION),
    }


def normalize_workload(kind: str, document: t.Any) -> dict[str, t.Any]:
    """A workload and the parts of its pod template the webhook reads; a CronJob's template is
    ``spec.jobTemplate.spec.template`` and its Jobs copy ``spec.jobTemplate.metadata``."""
    namespace, name, labels, _annotations = _metadata(document)
    if kind == "CronJob":
        template = _get(document, "spec", "jobTemplate", "spec", "template") or {}
        job_labels = dict(_get(document, "spec", "jobTemplate", "metadata", "labels") or {})
    else:
        template = _get(document, "spec", "template") or {}
        job_labels = {}
    spec = template.get("spec") or {}
    return {
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "labels": labels,
        "job_template_labels": job_labels,
        "template_labels": dict(_get(template, "metadata", "labels") or {}),
        "template_annotations": dict(_get(template, "metadata", "annotations") or {}),
        "identity_binding": opts_in_to_identity_binding(_get(template, "metadata", "annotations")),
        # serviceAccount is the deprecated alias of serviceAccountName
        "service_account": spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_SERVICE_ACCOUNT,
        "owner": _owner(document),
    }


def normalize_pod(document: t.Any) -> dict[str, t.Any]:
    namespace, name, labels, annotations = _metadata(document)
    spec = _get(document, "spec") or {}
    containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    client_ids = sorted(
        {
            env.get("value")
            for container in containers
            for env in container.get("env") or []
            if env.get("name") == ENV_CLIENT_ID and env.get("value")
        }
    )
    return {
        "kind": "Pod",
        "namespace": namespace,
        "name": name,
        "labels": labels,
        "template_labels": labels,
        "template_annotations": annotations,
        "identity_binding": opts_in_to_identity_binding(annotations),
        "job_template_labels": {},
        "service_account": spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_SERVICE_ACCOUNT,
        "phase": _get(document, "status", "phase"),
        "client_ids": client_ids,
        "owner": _owner(document),
    }


# --- Issuers ---------------------------------------------------------------------------------------------------------
class Issuers:
    """The issuers the audit knows: each AKS cluster's, the extra ones, and which are this cluster's."""

    def __init__(self, inventory: t.Mapping[str, t.Any]) -> None:
        self.names: dict[str, str] = {}  # issuer URL -> what it is ("cluster rg/name", "issuer_urls")
        for cluster in inventory.get("clusters") or []:
            if cluster.get("issuer_url"):
                self.names.setdefault(cluster["issuer_url"], f"cluster {cluster['resource_group']}/{cluster['name']}")
        for url in inventory.get("issuer_urls") or []:
            self.names.setdefault(url, "issuer_urls")
        discovered = inventory.get("cluster_issuer")
        cluster_issuers = [c["issuer_url"] for c in inventory.get("clusters") or [] if c.get("issuer_url")]
        if discovered and (discovered in self.names or not self.names):
            self.local = [discovered]
            self.names.setdefault(discovered, "this cluster's API server")
        elif len(cluster_issuers) == 1:
            # The API server did not say (or said something no option names): a single cluster is this one.
            self.local = cluster_issuers
        else:
            self.local = list(self.names)

    @property
    def known(self) -> bool:
        return bool(self.names)

    def classify(self, issuer: str | None) -> tuple[str, str | None]:
        """``(status, matched issuer)``: ok (this cluster), other-cluster, issuer-near-miss or issuer-unknown."""
        if issuer in self.local:
            return OK, issuer
        if issuer in self.names:
            return OTHER_CLUSTER, issuer
        for known in [*self.local, *self.names]:
            if issuer_near_miss(issuer, known):
                return ISSUER_NEAR_MISS, known
        return ISSUER_UNKNOWN, None

    def describe_local(self) -> str:
        return " or ".join(self.local) if self.local else "(no issuer known)"


def loose_service_account_subject(subject: t.Any) -> tuple[str, str] | None:
    """``(namespace, name)`` of anything shaped like a ServiceAccount subject, whatever its case; others None."""
    if not isinstance(subject, str) or not subject.strip().lower().startswith(SUBJECT_PREFIX):
        return None
    parts = subject.strip()[len(SUBJECT_PREFIX) :].split(":")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def role_label(grant: t.Mapping[str, t.Any]) -> str:
    return str(grant.get("role") or grant.get("role_definition_id"))


# --- Identity bindings: who may use which identity (Kubernetes RBAC) ------------------------------------------------
def _holds(values: t.Any, wanted: str) -> bool:
    return isinstance(values, list) and (RBAC_WILDCARD in values or wanted in values)


def rule_client_ids(rule: t.Mapping[str, t.Any]) -> set[str]:
    """The client IDs (lower case; ``*`` for any) a ClusterRole rule lets use through an identity binding: its verbs
    hold use-managed-identity and its API groups cid.wi.aks.azure.com (or ``*``). A rule limited to resourceNames
    grants nothing here: the token proxy's SubjectAccessReview names the resource (the client ID) and no object,
    and RBAC matches a rule with resourceNames only for requests that name one
    (kubernetes.io/docs/reference/access-authn-authz/rbac/#referring-to-resources). Client IDs compare ignoring
    case, as Azure writes them in lower case (a rule in upper case is a stricter RBAC resource this audit does not
    flag)."""
    if rule.get("resource_names") or not _holds(rule.get("verbs"), IDENTITY_BINDING_RBAC_VERB):
        return set()
    if not _holds(rule.get("api_groups"), IDENTITY_BINDING_RBAC_API_GROUP):
        return set()
    return {str(resource).lower() for resource in rule.get("resources") or []}


def rbac_subject_service_accounts(subject: t.Mapping[str, t.Any]) -> tuple[str | None, str | None] | None:
    """Which ServiceAccounts an RBAC subject names: ``(namespace, name)`` one, ``(namespace, None)`` all of a
    namespace (group system:serviceaccounts:<namespace>), ``(None, None)`` all of the cluster (system:serviceaccounts,
    system:authenticated); None when it names no ServiceAccount (other users and groups)."""
    kind, name = subject.get("kind"), str(subject.get("name") or "")
    if kind == "ServiceAccount":
        namespace = subject.get("namespace")
        return (namespace, name) if namespace and name else None
    if kind == "User":  # a ServiceAccount's user name, system:serviceaccount:<namespace>:<name>, as RBAC allows
        parsed = loose_service_account_subject(name)
        return parsed if parsed and name == service_account_subject(*parsed) else None
    if kind == "Group":
        # The groups the API server puts a ServiceAccount's token in (service_account_groups, one source).
        if name in GROUPS_OF_EVERY_SERVICE_ACCOUNT:
            return (None, None)
        namespace = name.rpartition(":")[2]
        if name.count(":") == 2 and namespace and name in service_account_groups(namespace):
            return (namespace, None)
    return None


def rbac_subject_label(subject: t.Mapping[str, t.Any]) -> str:
    """``ServiceAccount/<namespace>/<name>``, ``Group/<name>`` or ``User/<name>``."""
    if subject.get("kind") == "ServiceAccount":
        return k8s_subject("ServiceAccount", subject.get("namespace"), str(subject.get("name")))
    return f"{subject.get('kind')}/{subject.get('name')}"


def identity_binding_grants(
    cluster_roles: list[dict[str, t.Any]], cluster_role_bindings: list[dict[str, t.Any]]
) -> list[dict[str, t.Any]]:
    """Every grant of use-managed-identity found by rule content: one per ClusterRoleBinding and client ID (``*``
    for a wildcard rule) whose ClusterRole's rules grant it, with the subjects that can be ServiceAccounts (a
    binding with none grants no workload). Sorted by ClusterRoleBinding and client ID. Only cluster-wide grants
    count: the token proxy asks without a namespace, as the identity-bindings how-to grants it."""
    roles = {role.get("name"): role for role in cluster_roles}
    grants = []
    for binding in sorted(cluster_role_bindings, key=lambda b: str(b.get("name"))):
        reference = binding.get("role_ref") or {}
        role = roles.get(reference.get("name")) if reference.get("kind") == "ClusterRole" else None
        if role is None:
            continue
        client_ids: set[str] = set()
        for rule in role.get("rules") or []:
            client_ids |= rule_client_ids(rule)
        subjects = [s for s in binding.get("subjects") or [] if rbac_subject_service_accounts(s) is not None]
        for client_id in sorted(client_ids) if subjects else []:
            grants.append(
                {
                    "client_id": client_id,
                    "cluster_role": role.get("name"),
                    "cluster_role_binding": binding.get("name"),
                    "subjects": [rbac_subject_label(s) for s in subjects],
                    "scopes": [rbac_subject_service_accounts(s) for s in subjects],
                }
            )
    return grants


def _scope_covers(scope: tuple[str | None, str | None], namespace: str, name: str) -> bool:
    return scope[0] is None or (scope[0] == namespace and scope[1] in (None, name))


def binding_view(binding: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return {
        "cluster_resource_group": binding.get("cluster_resource_group"),
        "cluster_name": binding.get("cluster_name"),
        "name": binding.get("name"),
        "issuer_url": binding.get("issuer_url"),
        "provisioning_state": binding.get("provisioning_state"),
    }


def _cluster_label(binding: t.Mapping[str, t.Any]) -> str:
    return f"{binding.get('cluster_resource_group')}/{binding.get('cluster_name')}"


# --- The join --------------------------------------------------------------------------------------------------------
class _Audit:
    def __init__(self, inventory: t.Mapping[str, t.Any], credential_warning_threshold: int) -> None:
        self.inventory = inventory
        self.threshold = credential_warning_threshold
        self.issuers = Issuers(inventory)
        self.findings: list[dict[str, str]] = []
        scope = inventory.get("namespaces")
        self.namespaces = set(scope) if scope else None
        self.identities = [dict(i) for i in inventory.get("identities") or []]
        self.by_client_id = {str(i.get("client_id") or "").lower(): i for i in self.identities if i.get("client_id")}
        self.service_accounts = {
            (sa["namespace"], sa["name"]): sa
            for sa in (normalize_service_account(d) for d in inventory.get("service_accounts") or [])
            if self.in_scope(sa["namespace"])
        }
        workloads = [normalize_workload(w["kind"], w["document"]) for w in inventory.get("workloads") or []]
        pods = [normalize_pod(p) for p in inventory.get("pods") or []]
        self.pods = [p for p in pods if self.in_scope(p["namespace"]) and p["phase"] not in FINISHED_POD_PHASES]
        # A Job a CronJob made, and a pod a controller made, are reported through their owner; a bare pod is a
        # workload of its own.
        self.workloads = [
            w
            for w in workloads + [p for p in self.pods if p["owner"] is None]
            if self.in_scope(w["namespace"])
            and not (w["kind"] == "Job" and (w["owner"] or {}).get("kind") == "CronJob")
        ]
        self.grants = self._grants()
        # Identity bindings and the RBAC that lets ServiceAccounts use them; None in the inventory: not read, and
        # then not judged.
        self.bindings_read = inventory.get("identity_bindings") is not None
        self.bindings = [dict(b) for b in inventory.get("identity_bindings") or []]
        clusters = inventory.get("clusters") or []
        local = [c for c in clusters if c.get("issuer_url") and c["issuer_url"] in self.issuers.local]
        if not local and len(clusters) == 1:
            local = clusters  # as Issuers does: a single cluster is this one
        self.local_clusters = {(str(c["resource_group"]).lower(), str(c["name"]).lower()) for c in local}
        self.local_label = " or ".join(f"{c['resource_group']}/{c['name']}" for c in local) or "this cluster"
        self.rbac_read = (
            inventory.get("cluster_roles") is not None and inventory.get("cluster_role_bindings") is not None
        )
        self.rbac = (
            identity_binding_grants(inventory.get("cluster_roles") or [], inventory.get("cluster_role_bindings") or [])
            if self.rbac_read
            else []
        )

    def in_scope(self, namespace: str | None) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    # -- identity bindings and their RBAC
    def bindings_of(self, client_id: t.Any, identity: t.Mapping[str, t.Any] | None = None, *, local: bool = False):
        """The bindings of the identity (by client ID, or by resource ID) on the audited clusters, or on this one."""
        client_id = str(client_id or "").lower()
        identity_id = str((identity or {}).get("id") or "").lower()
        return [
            b
            for b in self.bindings
            if (
                (client_id and str(b.get("client_id") or "").lower() == client_id)
                or (identity_id and str(b.get("identity_id") or "").lower() == identity_id)
            )
            and (
                not local
                or (str(b.get("cluster_resource_group")).lower(), str(b.get("cluster_name")).lower())
                in self.local_clusters
            )
        ]

    def rbac_grants_for(self, namespace: str, name: str, client_id: t.Any) -> list[dict[str, str]]:
        """The grants that let ServiceAccount namespace/name use the identity of ``client_id``, each with the
        subject that names it."""
        wanted = str(client_id or "").lower()
        found = []
        for grant in self.rbac:
            if grant["client_id"] not in (wanted, RBAC_WILDCARD):
                continue
            for label, scope in zip(grant["subjects"], grant["scopes"], strict=True):
                if _scope_covers(scope, namespace, name):
                    found.append(
                        {
                            "cluster_role": grant["cluster_role"],
                            "cluster_role_binding": grant["cluster_role_binding"],
                            "subject": label,
                        }
                    )
                    break
        return found

    def reaches_by_binding(self, namespace: str, name: str, client_id: t.Any, identity: dict | None) -> bool:
        return bool(self.bindings_of(client_id, identity, local=True)) and bool(
            self.rbac_grants_for(namespace, name, client_id)
        )

    def has_own_credential(self, identity: dict | None, namespace: str, name: str, views: list[dict]) -> bool:
        """Whether a credential of the identity trusts this cluster's issuer for the ServiceAccount and the webhook's
        audience."""
        wanted = service_account_subject(namespace, name)
        return identity is not None and any(
            v["identity"] is identity
            and v["credential"].get("subject") == wanted
            and v["issuer_status"] == OK
            and DEFAULT_AUDIENCE in (v["credential"].get("audiences") or [])
            for v in views
        )

    def add(self, severity: str, code: str, subject: str, message: str, fix: str) -> None:
        self.findings.append(finding(severity, code, subject, message, fix))

    def _grants(self) -> dict[str, list[dict[str, t.Any]]]:
        grants: dict[str, list[dict[str, t.Any]]] = {}
        for assignment in self.inventory.get("role_assignments") or []:
            principal = str(assignment.get("principal_id") or "").lower()
            grants.setdefault(principal, []).append(
                {
                    "role": assignment.get("role_name") or assignment.get("role_definition_id"),
                    "role_definition_id": assignment.get("role_definition_id"),
                    "scope": assignment.get("scope"),
                }
            )
        for found in grants.values():
            found.sort(key=lambda g: (str(g["scope"]).lower(), str(g["role"])))
        return grants

    # -- credentials
    def credential_views(self) -> list[dict[str, t.Any]]:
        """Every credential of every identity with its issuer status and the ServiceAccount it names."""
        views = []
        for identity in self.identities:
            for credential in identity.get("credentials") or []:
                status, matched = self.issuers.classify(credential.get("issuer"))
                parsed = loose_service_account_subject(credential.get("subject"))
                views.append(
                    {
                        "identity": identity,
                        "credential": credential,
                        "issuer_status": status if self.issuers.known else OK,
                        "issuer_match": matched,
                        "target": parsed,
                        # AKS's own credential for the identity's bindings: its issuer is the binding's, and its
                        # subject no ServiceAccount's, so it is judged against the bindings, not like the others.
                        "binding_credential": credential.get("name") == IDENTITY_BINDING_CREDENTIAL_NAME,
                    }
                )
        return views

    def check_credentials(self, views: list[dict[str, t.Any]]) -> None:
        for view in views:
            identity, credential, target = view["identity"], view["credential"], view["target"]
            if target is None or not self.in_scope(target[0]) or view["binding_credential"]:
                # Not a Kubernetes subject (GitHub Actions, ...), a namespace this audit did not list, or AKS's own
                # credential (check_binding_credentials judges it).
                continue
            subject = credential_subject(identity, credential)
            where = f"federated credential '{credential.get('name')}' on managed identity {identity.get('name')}"
            if view["issuer_status"] == ISSUER_UNKNOWN:
                self.add(
                    WARNING,
                    ISSUER_UNKNOWN,
                    subject,
                    f"{where} trusts issuer {credential.get('issuer')}, which is no known cluster's "
                    f"(known: {', '.join(sorted(self.issuers.names))}); left over from a deleted or re-created "
                    "cluster, it matches no token and uses one of the identity's 20 credentials",
                    f"Point it at the current issuer ({self.issuers.describe_local()}) with "
                    "aks.workload_identity.federated_credential (same name, new issuer), or delete it",
                )
                continue
            if view["issuer_status"] == OTHER_CLUSTER:
                continue  # its ServiceAccount lives in another cluster, which this audit does not list
            if view["issuer_status"] == ISSUER_NEAR_MISS:
                self.add(
                    ERROR,
                    ISSUER_NEAR_MISS,
                    subject,
                    f"{where}: {issuer_near_miss(credential.get('issuer'), view['issuer_match'])}",
                    f"Set its issuer to exactly {view['issuer_match']} (aks.workload_identity.federated_credential)",
                )
            self._check_subject(identity, credential, target, subject, where)

    def _check_subject(
        self, identity: dict, credential: dict, target: tuple[str, str], subject: str, where: str
    ) -> None:
        if target in self.service_accounts and credential.get("subject") == service_account_subject(*target):
            return
        for (namespace, name), _account in sorted(self.service_accounts.items()):
            note = subject_near_miss(credential.get("subject"), service_account_subject(namespace, name))
            if note:
                self.add(
                    ERROR,
                    SUBJECT_NEAR_MISS,
                    subject,
                    f"{where}: {note}; no ServiceAccount {target[0]}/{target[1]} exists",
                    f"Set its subject to exactly {service_account_subject(namespace, name)} "
                    "(a new credential: Azure does not rename; delete this one)",
                )
                return
        self.add(
            WARNING,
            CREDENTIAL_ORPHANED,
            subject,
            f"{where} trusts {credential.get('subject')}, but ServiceAccount {target[0]}/{target[1]} does not exist; "
            "whoever creates it gets the identity's access",
            "Delete the credential if the workload is gone, or create the ServiceAccount it was made for",
        )

    def check_budget(self, views: list[dict[str, t.Any]]) -> None:
        for identity in self.identities:
            count = len(identity.get("credentials") or [])
            if count < self.threshold and count < MAX_FEDERATED_CREDENTIALS_PER_IDENTITY:
                continue
            full = count >= MAX_FEDERATED_CREDENTIALS_PER_IDENTITY
            kubernetes = sum(
                1
                for v in views
                if v["identity"] is identity and v["target"] is not None and not v["binding_credential"]
            )
            fix = (
                "Delete unused or stale credentials (see the other findings), or give some workloads their own identity"
            )
            if kubernetes:
                # An identity binding: AKS keeps one credential for all the identity's bindings, and one binding per
                # cluster serves any number of its ServiceAccounts (RBAC says which).
                bound = [
                    f"'{b.get('name')}' on cluster {_cluster_label(b)}"
                    for b in self.bindings_of(identity.get("client_id"), identity)
                ]
                fix = (
                    "Move its Kubernetes ServiceAccounts to "
                    + (f"its identity binding ({', '.join(bound)})" if bound else "an identity binding")
                    + f": one credential ({IDENTITY_BINDING_CREDENTIAL_NAME}) then serves any number of ServiceAccounts "
                    "per cluster (the workload role with federation: identity_binding, or "
                    "aks.workload_identity.aks_identity_binding and aks.workload_identity.wid_identity_binding_access), "
                    "and delete their own credentials; delete unused or stale credentials too (see the other findings)"
                )
            self.add(
                ERROR if full else WARNING,
                CREDENTIAL_BUDGET,
                identity_subject(identity),
                f"managed identity {identity.get('name')} has {count} of the {MAX_FEDERATED_CREDENTIALS_PER_IDENTITY} "
                "federated credentials Azure allows per identity"
                + (f", {kubernetes} of them for Kubernetes ServiceAccounts" if kubernetes else "")
                + ("; no other cluster or ServiceAccount can be federated" if full else ""),
                fix,
            )

    def check_binding_credentials(self, views: list[dict[str, t.Any]]) -> None:
        """AKS's credential on an identity that no audited cluster binds. AKS never deletes it, and it serves every
        binding of the identity, on any cluster: it may serve one on a cluster this audit did not read."""
        if not self.bindings_read:
            return
        for view in views:
            identity, credential = view["identity"], view["credential"]
            if not view["binding_credential"] or self.bindings_of(identity.get("client_id"), identity):
                continue
            audited = self.inventory.get("clusters") or []
            clusters = ", ".join(sorted(f"{c.get('resource_group')}/{c.get('name')}" for c in audited))
            self.add(
                INFO,
                IDENTITY_BINDING_CREDENTIAL_UNBOUND,
                credential_subject(identity, credential),
                f"federated credential '{credential.get('name')}' on managed identity {identity.get('name')} is the one "
                f"AKS keeps for the identity's bindings (issuer {credential.get('issuer')}), but no audited cluster "
                f"({clusters}) binds the identity; it may serve a binding on another cluster (AKS never deletes it)",
                "Look for bindings of the identity on your other clusters (aks.workload_identity.aks_identity_binding_info"
                ", or wid_info with those clusters); delete the credential only once no cluster binds the identity "
                "(the teardown role with teardown_delete_binding_credential, or aks.workload_identity.federated_credential "
                "state: absent): it uses one of the identity's 20 credentials",
            )

    # -- ServiceAccounts
    def check_service_account(
        self, account: dict[str, t.Any], views: list[dict[str, t.Any]], workloads: list[dict[str, t.Any]]
    ) -> dict | None:
        """Findings on one ServiceAccount (``workloads``: those that run as it); returns the identity its annotation
        names (None when none does)."""
        subject = k8s_subject("ServiceAccount", account["namespace"], account["name"])
        label = f"ServiceAccount {account['namespace']}/{account['name']}"
        self._check_token_expiration(account["token_expiration"], subject, label)
        client_id = account["client_id"]
        if client_id is None:
            return None
        identity = self.by_client_id.get(str(client_id).lower())
        if identity is None:
            reason = "is not a GUID" if not is_uuid(client_id) else "matches no user-assigned managed identity"
            self.add(
                ERROR,
                ANNOTATION_UNKNOWN_CLIENT_ID,
                subject,
                f"{label} has annotation {ANNOTATION_CLIENT_ID} {client_id}, which {reason} in "
                f"{self.inventory.get('identity_scope') or 'the subscription'}; its pods get tokens Entra cannot "
                "exchange (AADSTS700016)",
                "Annotate it with the client ID of the identity it should use (aks.workload_identity.wid_service_account)"
                ", or widen identity_resource_groups if the identity lives elsewhere",
            )
            return None
        credentials = identity.get("credentials")
        if credentials is None:
            return identity
        wanted = service_account_subject(account["namespace"], account["name"])
        own = [v for v in views if v["identity"] is identity]
        if self.has_own_credential(identity, account["namespace"], account["name"], views):
            return identity
        if any(
            (v["credential"].get("subject") == wanted and v["issuer_status"] == ISSUER_NEAR_MISS)
            or subject_near_miss(v["credential"].get("subject"), wanted)
            for v in own
        ):
            return identity  # the near-miss finding on the credential says what to fix
        # Workloads that opt in to the identity binding need no credential of their own: the binding checks judge
        # them. Those that do not go to Entra with the cluster's token, which only a credential of its own trusts.
        direct = [f"{w['kind']} {w['name']}" for w in workloads if not w["identity_binding"]]
        by_binding = self.reaches_by_binding(account["namespace"], account["name"], client_id, identity)
        if (workloads and not direct) or (not workloads and by_binding):
            return identity
        binding_note = (
            f"; it may use the identity's binding, but {', '.join(direct)} do not opt in "
            f'({ANNOTATION_USE_IDENTITY_BINDING}: "true" on the pod template)'
            if direct and (by_binding or len(direct) < len(workloads))
            else ""
        )
        self.add(
            ERROR,
            ANNOTATION_NO_CREDENTIAL,
            subject,
            f"{label} is annotated with the client ID of managed identity {identity.get('name')}, but no federated "
            f"credential of that identity trusts issuer {self.issuers.describe_local()} for subject {wanted} with "
            f"audience {DEFAULT_AUDIENCE}; the token exchange fails (AADSTS70021){binding_note}",
            f"Federate them: aks.workload_identity.federated_credential resource_group={identity.get('resource_group')} "
            f"identity_name={identity.get('name')} namespace={account['namespace']} service_account={account['name']} "
            "issuer=<the cluster's issuer>"
            + (
                f'; or opt the pod templates in to the identity binding ({ANNOTATION_USE_IDENTITY_BINDING}: "true", '
                "aks.workload_identity.wid_workload_patch)"
                if binding_note
                else ""
            ),
        )
        return identity

    def _check_token_expiration(self, value: t.Any, subject: str, label: str) -> None:
        if value is None:
            return
        number = int(value) if isinstance(value, str) and value.strip().isdigit() else value
        errors = validate_token_expiration(number, ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION)
        if errors:
            self.add(
                ERROR,
                TOKEN_EXPIRATION_OUT_OF_RANGE,
                subject,
                f"{label}: {errors[0]} (got {value!r}); the webhook refuses to mutate its pods",
                f"Set {ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION} to a value from 3600 to 86400, or remove it "
                "(default 3600)",
            )

    # -- workloads and pods
    def check_workload(self, workload: dict[str, t.Any], account: dict[str, t.Any] | None) -> bool:
        """Findings on a workload that runs as an annotated ServiceAccount; returns whether it is labelled."""
        subject = k8s_subject(workload["kind"], workload["namespace"], workload["name"])
        label = f"{workload['kind']} {workload['namespace']}/{workload['name']}"
        self._check_token_expiration(
            workload["template_annotations"].get(ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION), subject, label
        )
        labelled = workload["template_labels"].get(LABEL_USE) == LABEL_USE_VALUE
        if labelled or account is None:
            return labelled
        where = "it lacks" if workload["kind"] == "Pod" else "its pod template lacks"
        on_job = workload["kind"] in ("Job", "CronJob") and LABEL_USE_VALUE in (
            workload["labels"].get(LABEL_USE),
            workload["job_template_labels"].get(LABEL_USE),
        )
        also = []
        if workload["labels"].get(LABEL_USE) == LABEL_USE_VALUE and not on_job:
            also.append(f"the label is on the {workload['kind']}'s own metadata, which the webhook does not read")
        if account["labels"].get(LABEL_USE) == LABEL_USE_VALUE:
            also.append(
                "the label is on the ServiceAccount, as preview releases wanted; the webhook no longer reads it"
            )
        template = "spec.jobTemplate.spec.template" if workload["kind"] == "CronJob" else "spec.template"
        self.add(
            ERROR,
            LABEL_ON_JOB_METADATA if on_job else WORKLOAD_LABEL_MISSING,
            subject,
            f"{label} runs as annotated ServiceAccount {account['namespace']}/{account['name']}, but {where} "
            f'the label {LABEL_USE}: "true", so the webhook injects no token or AZURE_* settings'
            + (
                f"; the label is on the {workload['kind']}'s metadata, not on its pod template ({template}.metadata)"
                if on_job
                else ""
            )
            + "".join(f"; {note}" for note in also),
            f'Add {LABEL_USE}: "true" to {template}.metadata.labels'
            + (" (aks.workload_identity.wid_workload_patch)" if workload["kind"] not in ("Job", "Pod") else "")
            + (" and create the Job again (a Job's pod template cannot change)" if workload["kind"] == "Job" else "")
            + (" and create the pod again" if workload["kind"] == "Pod" else ""),
        )
        return False

    def check_pod(self, pod: dict[str, t.Any], account: dict[str, t.Any] | None) -> None:
        if account is None or not account["client_id"] or not pod["client_ids"]:
            return
        stale = [value for value in pod["client_ids"] if value.lower() != str(account["client_id"]).lower()]
        if not stale:
            return
        owner = pod["owner"]
        if owner and owner["kind"] == "ReplicaSet":
            restart = (
                f"Restart the Deployment that owns ReplicaSet {owner['name']} (kubectl rollout restart deployment)"
            )
        elif owner:
            restart = f"Restart its {owner['kind']} {owner['name']} (kubectl rollout restart, or delete the pod)"
        else:
            restart = "Delete the pod and create it again"
        self.add(
            WARNING,
            POD_CLIENT_ID_STALE,
            k8s_subject("Pod", pod["namespace"], pod["name"]),
            f"pod {pod['namespace']}/{pod['name']} runs with {ENV_CLIENT_ID} {', '.join(stale)}, but ServiceAccount "
            f"{account['namespace']}/{account['name']} now says {account['client_id']}; the webhook injects the "
            "client ID only when a pod is created",
            restart,
        )

    # -- identity bindings
    def check_workload_binding(self, workload: dict[str, t.Any], account: dict | None, identity: dict | None) -> None:
        """A workload that opts in to the identity binding of its ServiceAccount's identity, which has no binding on
        this cluster. An unknown client ID is annotation-unknown-client-id's to report (unless a binding names it)."""
        if not workload["identity_binding"] or account is None or identity is None:
            return
        if not self.bindings_read or not self.local_clusters:
            return  # no binding of this cluster was read: nothing to judge by
        if self.bindings_of(account["client_id"], identity, local=True):
            return
        elsewhere = [
            f"'{b.get('name')}' on cluster {_cluster_label(b)}"
            for b in self.bindings_of(account["client_id"], identity)
        ]
        self.add(
            ERROR,
            IDENTITY_BINDING_MISSING,
            k8s_subject(workload["kind"], workload["namespace"], workload["name"]),
            f"{workload['kind']} {workload['namespace']}/{workload['name']} opts in to an identity binding "
            f'({ANNOTATION_USE_IDENTITY_BINDING}: "true") for managed identity {identity.get("name")} (client ID '
            f"{account['client_id']}, ServiceAccount {account['namespace']}/{account['name']}), but the identity has no "
            f"identity binding on cluster {self.local_label}"
            + (f" (only {', '.join(elsewhere)})" if elsewhere else "")
            + "; AKS's token proxy refuses its tokens",
            f"Bind the identity to the cluster: aks.workload_identity.aks_identity_binding resource_group=<the "
            f"cluster's group> cluster_name=<the cluster> identity_name={identity.get('name')} (or the workload role "
            "with federation: identity_binding); or remove the annotation to use a federated credential of its own",
        )

    def check_binding_access(self, account: dict[str, t.Any], identity: dict | None, workloads: list[dict]) -> None:
        """An annotated ServiceAccount whose workloads opt in to the identity binding, which no RBAC grant lets use
        the identity: AKS's token proxy refuses its tokens (its SubjectAccessReview is denied)."""
        client_id = account["client_id"]
        opted = [f"{w['kind']} {w['name']}" for w in workloads if w["identity_binding"]]
        if not self.rbac_read or not client_id or not opted:
            return
        if identity is None and not self.bindings_of(client_id, local=True):
            return  # annotation-unknown-client-id says what is wrong
        if self.rbac_grants_for(account["namespace"], account["name"], client_id):
            return
        named = f"managed identity {identity.get('name')} ({client_id})" if identity else f"client ID {client_id}"
        self.add(
            ERROR,
            IDENTITY_BINDING_ACCESS_MISSING,
            k8s_subject("ServiceAccount", account["namespace"], account["name"]),
            f"ServiceAccount {account['namespace']}/{account['name']} is annotated with the client ID of {named} and "
            f'{", ".join(opted)} opt in to its identity binding ({ANNOTATION_USE_IDENTITY_BINDING}: "true"), but no '
            f"ClusterRoleBinding grants it {IDENTITY_BINDING_RBAC_VERB} on {IDENTITY_BINDING_RBAC_API_GROUP}/"
            f"{str(client_id).lower()}; AKS's token proxy refuses its pods' tokens",
            f"Grant it: aks.workload_identity.wid_identity_binding_access client_id={client_id} service_accounts="
            f"[{{namespace: {account['namespace']}, name: {account['name']}}}], or the workload role with federation: "
            "identity_binding",
        )

    def check_stale_grants(self) -> None:
        """Grants of use-managed-identity on a client ID that no audited identity has and no binding of this cluster
        maps: they let nobody get a token (wildcard rules are not judged)."""
        for grant in self.rbac:
            client_id = grant["client_id"]
            if client_id == RBAC_WILDCARD or not any(s[0] is None or self.in_scope(s[0]) for s in grant["scopes"]):
                continue
            identity = self.by_client_id.get(client_id)
            if self.bindings_of(client_id, identity, local=True):
                continue
            judged_bindings = self.bindings_read and bool(self.local_clusters)
            if identity is not None and not judged_bindings:
                continue  # the identity exists; whether it is bound here was not read
            if identity is None:
                why = (
                    f"no managed identity in {self.inventory.get('identity_scope') or 'the subscription'} has that "
                    "client ID"
                    + (f" and no identity binding on cluster {self.local_label} maps it" if judged_bindings else "")
                )
                fix_tail = "; widen identity_resource_groups if the identity lives elsewhere"
            else:
                why = f"managed identity {identity.get('name')} has no identity binding on cluster {self.local_label}"
                fix_tail = (
                    "; or, if its workloads still need it, bind the identity to the cluster "
                    "(aks.workload_identity.aks_identity_binding)"
                )
            self.add(
                INFO,
                IDENTITY_BINDING_ACCESS_STALE,
                k8s_subject("ClusterRoleBinding", None, str(grant["cluster_role_binding"])),
                f"ClusterRoleBinding {grant['cluster_role_binding']} (ClusterRole {grant['cluster_role']}) lets "
                f"{', '.join(grant['subjects'])} use the identity of client ID {client_id} through an identity binding, "
                f"but {why}; the grant lets nobody get a token",
                "Delete the grant if nothing is to use the identity here (aks.workload_identity.wid_identity_binding_access "
                "state: absent for this collection's ClusterRole and ClusterRoleBinding, by hand for others)"
                + fix_tail,
            )

    def check_service_account_label(self, account: dict[str, t.Any], unlabelled: list[str]) -> None:
        if account["labels"].get(LABEL_USE) != LABEL_USE_VALUE:
            return
        self.add(
            WARNING if unlabelled else INFO,
            LABEL_ON_SERVICEACCOUNT,
            k8s_subject("ServiceAccount", account["namespace"], account["name"]),
            f'ServiceAccount {account["namespace"]}/{account["name"]} carries the label {LABEL_USE}: "true", which '
            "only preview releases of the webhook read; since v1.0 the label belongs on the pod template"
            + (f" (missing on {', '.join(unlabelled)})" if unlabelled else ""),
            "Label the pod templates of its workloads and remove the label from the ServiceAccount",
        )

    # -- aad-pod-identity
    def check_pod_identity(self) -> list[dict[str, t.Any]]:
        """Findings on aad-pod-identity objects and the workloads they bind, and the migration of each binding."""
        found = self.inventory.get("pod_identity") or {}
        identities = {}
        for document in found.get("identities") or []:
            namespace, name, _labels, _annotations = _metadata(document)
            identities[name] = (namespace, name, _get(document, "spec") or {})
        migrations = []
        selectors = {}
        for document in found.get("bindings") or []:
            namespace, name, _labels, _annotations = _metadata(document)
            spec = _get(document, "spec") or {}
            selector, target = spec.get("selector"), spec.get("azureIdentity")
            identity_spec = (identities.get(target) or (None, None, {}))[2]
            selectors[selector] = (namespace, name, target, identity_spec)
        bound = self._pod_identity_workloads()
        for selector, (namespace, name, target, identity_spec) in sorted(selectors.items(), key=lambda i: str(i[0])):
            workloads = bound.get(selector, [])
            migration = {
                "binding": f"{namespace}/{name}",
                "azure_identity": target,
                "selector": selector,
                "client_id": identity_spec.get("clientID"),
                "resource_id": identity_spec.get("resourceID"),
                "workloads": [
                    {
                        "kind": w["kind"],
                        "namespace": w["namespace"],
                        "name": w["name"],
                        "service_account": w["service_account"],
                    }
                    for w in workloads
                ],
            }
            migrations.append(migration)
        for namespace, name, spec in sorted(identities.values(), key=lambda i: (str(i[0]), i[1])):
            if not self.in_scope(namespace):
                continue
            bindings = [m for m in migrations if m["azure_identity"] == name]
            self.add(
                WARNING,
                POD_IDENTITY_LEFTOVER,
                k8s_subject("AzureIdentity", namespace, name),
                f"aad-pod-identity AzureIdentity {namespace}/{name} (client ID {spec.get('clientID')}, "
                f"{spec.get('resourceID')}) is left over; aad-pod-identity is deprecated and replaced by workload identity",
                self._migration_fix(spec, [w for m in bindings for w in m["workloads"]])
                + "; then delete the AzureIdentity",
            )
        for selector, (namespace, name, target, identity_spec) in sorted(selectors.items(), key=lambda i: str(i[0])):
            if not self.in_scope(namespace):
                continue
            self.add(
                WARNING,
                POD_IDENTITY_LEFTOVER,
                k8s_subject("AzureIdentityBinding", namespace, name),
                f"aad-pod-identity AzureIdentityBinding {namespace}/{name} (selector {selector}, AzureIdentity "
                f"{target}) is left over; pods labelled {POD_IDENTITY_LABEL}={selector} rely on it",
                self._migration_fix(identity_spec, bound.get(selector, [])) + "; then delete the AzureIdentityBinding",
            )
        for selector, workloads in sorted(bound.items()):
            identity_spec = (selectors.get(selector) or (None, None, None, {}))[3]
            for workload in workloads:
                self.add(
                    WARNING,
                    POD_IDENTITY_LEFTOVER,
                    k8s_subject(workload["kind"], workload["namespace"], workload["name"]),
                    f"{workload['kind']} {workload['namespace']}/{workload['name']} still selects an aad-pod-identity "
                    f"binding with the label {POD_IDENTITY_LABEL}={selector}",
                    self._migration_fix(identity_spec, [workload]) + f"; then remove the {POD_IDENTITY_LABEL} label",
                )
        return migrations

    def _pod_identity_workloads(self) -> dict[str, list[dict[str, t.Any]]]:
        bound: dict[str, list[dict[str, t.Any]]] = {}
        for workload in self.workloads:
            selector = workload["template_labels"].get(POD_IDENTITY_LABEL)
            if selector is not None:
                bound.setdefault(selector, []).append(workload)
        for workloads in bound.values():
            workloads.sort(key=lambda w: (w["namespace"], w["kind"], w["name"]))
        return bound

    def _migration_fix(self, identity_spec: t.Mapping[str, t.Any], workloads: list[dict[str, t.Any]]) -> str:
        client_id = identity_spec.get("clientID") or "<the identity's client ID>"
        resource_id = str(identity_spec.get("resourceID") or "")
        parts = resource_id.split("/")
        lowered = [p.lower() for p in parts]
        group = parts[lowered.index("resourcegroups") + 1] if "resourcegroups" in lowered[:-1] else "<resource group>"
        name = parts[-1] if resource_id else "<identity>"
        accounts = sorted({f"{w['namespace']}/{w['service_account']}" for w in workloads}) or [
            "<namespace>/<service account>"
        ]
        return (
            f"Workload identity equivalent: annotate ServiceAccount {', '.join(accounts)} with "
            f"{ANNOTATION_CLIENT_ID}: {client_id} (aks.workload_identity.wid_service_account), federate managed "
            f"identity {name} (resource group {group}) with issuer {self.issuers.describe_local()} and subject "
            f"system:serviceaccount:<namespace>:<service account> (aks.workload_identity.federated_credential), and "
            f'label the pod template {LABEL_USE}: "true" (aks.workload_identity.wid_workload_patch, or the workload '
            "role with the same settings)"
        )

    # -- the whole
    def run(self) -> dict[str, t.Any]:
        views = self.credential_views()
        self.check_credentials(views)
        self.check_binding_credentials(views)
        self.check_budget(views)
        running_as: dict[tuple, list[dict[str, t.Any]]] = {}
        for workload in sorted(self.workloads, key=lambda w: (w["namespace"], w["kind"], w["name"])):
            running_as.setdefault((workload["namespace"], workload["service_account"]), []).append(workload)
        accounts = {
            key: (account, self.check_service_account(account, views, running_as.get(key, [])))
            for key, account in self.service_accounts.items()
        }
        workloads_by_account: dict[tuple, list[dict[str, t.Any]]] = {}
        for key, workloads in sorted(running_as.items()):
            account, identity = accounts.get(key, (None, None))
            annotated = account if account is not None and account["client_id"] else None
            for workload in workloads:
                labelled = self.check_workload(workload, annotated)
                self.check_workload_binding(workload, annotated, identity)
                workloads_by_account.setdefault(key, []).append(
                    {
                        "kind": workload["kind"],
                        "name": workload["name"],
                        "labelled": labelled,
                        "identity_binding": workload["identity_binding"],
                    }
                )
            if annotated is not None:
                self.check_binding_access(annotated, identity, workloads)
        self.check_stale_grants()
        for pod in sorted(self.pods, key=lambda p: (p["namespace"], p["name"])):
            self.check_pod(pod, accounts.get((pod["namespace"], pod["service_account"]), (None, None))[0])
        for key, (account, _identity) in sorted(accounts.items()):
            if account["client_id"]:
                unlabelled = [
                    f"{w['kind']} {w['name']}" for w in workloads_by_account.get(key, []) if not w["labelled"]
                ]
                self.check_service_account_label(account, unlabelled)
            else:
                self.check_service_account_label(account, [])
        entries = self.entries(accounts, views, workloads_by_account)
        migrations = self.check_pod_identity()
        findings = sorted(self.findings, key=lambda f: (SEVERITIES.index(f["severity"]), f["code"], f["subject"]))
        summary = summarize(findings, entries, self.identities, self.workloads)
        summary["identity_bindings"] = len(self.bindings)
        return {
            "map": entries,
            "identities": self.identity_views(),
            "findings": findings,
            "pod_identity_migration": migrations,
            "identity_bindings": self.binding_views() if self.bindings_read else None,
            "rbac_grants": self.grant_views() if self.rbac_read else None,
            "summary": summary,
        }

    def entries(self, accounts: dict, views: list[dict], workloads_by_account: dict) -> list[dict[str, t.Any]]:
        """One entry per (ServiceAccount, identity) pair that an annotation or a credential ties together."""
        entries: dict[tuple, dict[str, t.Any]] = {}
        for (namespace, name), (account, identity) in accounts.items():
            if account["client_id"]:
                entries[(namespace, name, str(account["client_id"]).lower())] = self._entry(
                    namespace, name, account, identity, account["client_id"]
                )
        for view in views:
            target, identity = view["target"], view["identity"]
            if target is None or not self.in_scope(target[0]) or view["issuer_status"] == OTHER_CLUSTER:
                continue
            if view["binding_credential"]:
                continue  # AKS's credential serves the identity's bindings, not one ServiceAccount
            key = (target[0], target[1], str(identity.get("client_id") or "").lower())
            if key not in entries:
                account = self.service_accounts.get(target)
                entries[key] = self._entry(target[0], target[1], account, identity, identity.get("client_id"))
            entry = entries[key]
            entry["credentials"].append(self._credential_view(view))
        # ServiceAccounts an RBAC grant names one by one, for an audited identity: they reach it by its binding.
        for grant in self.rbac:
            identity = self.by_client_id.get(grant["client_id"])
            for namespace, name in grant["scopes"] if identity is not None else []:
                key = (namespace, name, grant["client_id"])
                if name is not None and self.in_scope(namespace) and key not in entries:
                    account = self.service_accounts.get((namespace, name))
                    entries[key] = self._entry(namespace, name, account, identity, identity.get("client_id"))
        for key, entry in entries.items():
            identity = self.by_client_id.get(key[2])
            entry["bindings"] = [binding_view(b) for b in self.bindings_of(key[2], identity, local=True)]
            entry["rbac_grants"] = self.rbac_grants_for(key[0], key[1], key[2])
            own = self.has_own_credential(identity, key[0], key[1], views)
            by_binding = bool(entry["bindings"]) and bool(entry["rbac_grants"])
            entry["via"] = {
                (True, True): VIA_BOTH,
                (True, False): VIA_CREDENTIAL,
                (False, True): VIA_BINDING,
                (False, False): VIA_NONE,
            }[(own, by_binding)]
            entry["credentials"].sort(key=lambda c: str(c["name"]))
            entry["workloads"] = workloads_by_account.get(key[:2], []) if entry["annotated"] else []
            entry["pods"] = sorted(
                (
                    {
                        "name": p["name"],
                        "client_ids": p["client_ids"],
                        "stale": any(c.lower() != key[2] for c in p["client_ids"]),
                    }
                    for p in self.pods
                    if (p["namespace"], p["service_account"]) == key[:2] and entry["annotated"]
                ),
                key=lambda p: p["name"],
            )
        return [entries[key] for key in sorted(entries)]

    def _entry(self, namespace: str, name: str, account: dict | None, identity: dict | None, client_id: t.Any) -> dict:
        return {
            "namespace": namespace,
            "service_account": name,
            "subject": service_account_subject(namespace, name),
            "service_account_exists": account is not None,
            "annotated": bool(
                account and account["client_id"] and str(account["client_id"]).lower() == str(client_id).lower()
            ),
            "client_id": client_id,
            "tenant_id": (account or {}).get("tenant_id"),
            "token_expiration": (account or {}).get("token_expiration"),
            "identity": _identity_ref(identity),
            "credentials": [],
            "grants": list(self.grants.get(str((identity or {}).get("principal_id") or "").lower(), []))
            if identity
            else [],
            "workloads": [],
            "pods": [],
            "bindings": [],
            "rbac_grants": [],
            "via": VIA_NONE,
        }

    def _credential_view(self, view: dict[str, t.Any]) -> dict[str, t.Any]:
        credential = view["credential"]
        return {
            "name": credential.get("name"),
            "issuer": credential.get("issuer"),
            "subject": credential.get("subject"),
            "audiences": list(credential.get("audiences") or []),
            "issuer_status": view["issuer_status"],
            "issuer_owner": self.issuers.names.get(view["issuer_match"] or ""),
        }

    def identity_views(self) -> list[dict[str, t.Any]]:
        views = []
        for identity in sorted(
            self.identities, key=lambda i: (str(i.get("resource_group")).lower(), str(i.get("name")))
        ):
            credentials = identity.get("credentials")
            views.append(
                {
                    **_identity_ref(identity),
                    "tenant_id": identity.get("tenant_id"),
                    "credential_count": None if credentials is None else len(credentials),
                    "credentials": [
                        {
                            "name": c.get("name"),
                            "issuer": c.get("issuer"),
                            "subject": c.get("subject"),
                            "audiences": list(c.get("audiences") or []),
                        }
                        for c in sorted(credentials or [], key=lambda c: str(c.get("name")))
                    ],
                    "grants": list(self.grants.get(str(identity.get("principal_id") or "").lower(), [])),
                    "bindings": [binding_view(b) for b in self.bindings_of(identity.get("client_id"), identity)],
                    "rbac_grants": [
                        {key: grant[key] for key in ("cluster_role", "cluster_role_binding", "subjects")}
                        for grant in self.rbac
                        if grant["client_id"] == str(identity.get("client_id") or "").lower()
                    ],
                }
            )
        return views

    def binding_views(self) -> list[dict[str, t.Any]]:
        """Every binding of the audited clusters, with the audited identity it maps (None: none in the scope)."""
        views = []
        for binding in self.bindings:
            identity = self.by_client_id.get(str(binding.get("client_id") or "").lower())
            views.append(
                {
                    **binding_view(binding),
                    "identity_id": binding.get("identity_id"),
                    "client_id": binding.get("client_id"),
                    "identity": identity.get("name") if identity else None,
                }
            )
        return sorted(
            views, key=lambda v: tuple(str(v[k]).lower() for k in ("cluster_resource_group", "cluster_name", "name"))
        )

    def grant_views(self) -> list[dict[str, t.Any]]:
        """Every grant of use-managed-identity, with the audited identity its client ID is (None: none, or ``*``)."""
        return [
            {
                **{key: grant[key] for key in ("client_id", "cluster_role", "cluster_role_binding", "subjects")},
                "identity": (self.by_client_id.get(grant["client_id"]) or {}).get("name"),
            }
            for grant in self.rbac
        ]


def _identity_ref(identity: t.Mapping[str, t.Any] | None) -> dict[str, t.Any] | None:
    if identity is None:
        return None
    return {key: identity.get(key) for key in ("name", "resource_group", "id", "client_id", "principal_id")}


def summarize(findings: list[dict], entries: list[dict], identities: list[dict], workloads: list[dict]) -> dict:
    by_code: dict[str, int] = {}
    for item in findings:
        by_code[item["code"]] = by_code.get(item["code"], 0) + 1
    return {
        "errors": sum(1 for f in findings if f["severity"] == ERROR),
        "warnings": sum(1 for f in findings if f["severity"] == WARNING),
        "info": sum(1 for f in findings if f["severity"] == INFO),
        "by_code": dict(sorted(by_code.items())),
        "service_accounts": len({(e["namespace"], e["service_account"]) for e in entries}),
        "identities": len(identities),
        "credentials": sum(len(i.get("credentials") or []) for i in identities),
        "workloads": len(workloads),
    }


def build_trust_map(
    inventory: t.Mapping[str, t.Any], *, credential_warning_threshold: int = DEFAULT_CREDENTIAL_WARNING_THRESHOLD
) -> dict[str, t.Any]:
    """The ownership map, the identities, the findings and a summary, from an inventory (see the module doc)."""
    return _Audit(inventory, credential_warning_threshold).run()
