# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The trust map of Microsoft Entra Workload ID on one cluster, and what is wrong with it: pure functions.

``build_trust_map(inventory)`` joins what wid_info read (plain dicts, no SDK objects) into the ownership map
namespace/ServiceAccount -> identity (client ID) -> federated credentials -> role grants, with the workloads
that run as each ServiceAccount, and lists findings. The inventory::

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

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_CLIENT_ID,
    ANNOTATION_SERVICE_ACCOUNT_TOKEN_EXPIRATION,
    ANNOTATION_TENANT_ID,
    DEFAULT_AUDIENCE,
    ENV_CLIENT_ID,
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

    def in_scope(self, namespace: str | None) -> bool:
        return self.namespaces is None or namespace in self.namespaces

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
                    }
                )
        return views

    def check_credentials(self, views: list[dict[str, t.Any]]) -> None:
        for view in views:
            identity, credential, target = view["identity"], view["credential"], view["target"]
            if target is None or not self.in_scope(target[0]):
                continue  # not a Kubernetes subject (GitHub Actions, ...), or a namespace this audit did not list
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

    def check_budget(self) -> None:
        for identity in self.identities:
            count = len(identity.get("credentials") or [])
            if count < self.threshold and count < MAX_FEDERATED_CREDENTIALS_PER_IDENTITY:
                continue
            full = count >= MAX_FEDERATED_CREDENTIALS_PER_IDENTITY
            self.add(
                ERROR if full else WARNING,
                CREDENTIAL_BUDGET,
                identity_subject(identity),
                f"managed identity {identity.get('name')} has {count} of the {MAX_FEDERATED_CREDENTIALS_PER_IDENTITY} "
                "federated credentials Azure allows per identity"
                + ("; no other cluster or ServiceAccount can be federated" if full else ""),
                "Delete unused or stale credentials (see the other findings), or give some workloads their own identity",
            )

    # -- ServiceAccounts
    def check_service_account(self, account: dict[str, t.Any], views: list[dict[str, t.Any]]) -> dict | None:
        """Findings on one ServiceAccount; returns the identity its annotation names (None when none does)."""
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
        if any(
            v["credential"].get("subject") == wanted
            and v["issuer_status"] == OK
            and DEFAULT_AUDIENCE in (v["credential"].get("audiences") or [])
            for v in own
        ):
            return identity
        if any(
            (v["credential"].get("subject") == wanted and v["issuer_status"] == ISSUER_NEAR_MISS)
            or subject_near_miss(v["credential"].get("subject"), wanted)
            for v in own
        ):
            return identity  # the near-miss finding on the credential says what to fix
        self.add(
            ERROR,
            ANNOTATION_NO_CREDENTIAL,
            subject,
            f"{label} is annotated with the client ID of managed identity {identity.get('name')}, but no federated "
            f"credential of that identity trusts issuer {self.issuers.describe_local()} for subject {wanted} with "
            f"audience {DEFAULT_AUDIENCE}; the token exchange fails (AADSTS70021)",
            f"Federate them: aks.workload_identity.federated_credential resource_group={identity.get('resource_group')} "
            f"identity_name={identity.get('name')} namespace={account['namespace']} service_account={account['name']} "
            "issuer=<the cluster's issuer>",
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
        self.check_budget()
        accounts = {
            key: (account, self.check_service_account(account, views)) for key, account in self.service_accounts.items()
        }
        workloads_by_account: dict[tuple, list[dict[str, t.Any]]] = {}
        for workload in sorted(self.workloads, key=lambda w: (w["namespace"], w["kind"], w["name"])):
            key = (workload["namespace"], workload["service_account"])
            account = accounts.get(key, (None, None))[0]
            annotated = account if account is not None and account["client_id"] else None
            labelled = self.check_workload(workload, annotated)
            workloads_by_account.setdefault(key, []).append(
                {"kind": workload["kind"], "name": workload["name"], "labelled": labelled}
            )
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
        return {
            "map": entries,
            "identities": self.identity_views(),
            "findings": findings,
            "pod_identity_migration": migrations,
            "summary": summarize(findings, entries, self.identities, self.workloads),
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
            key = (target[0], target[1], str(identity.get("client_id") or "").lower())
            if key not in entries:
                account = self.service_accounts.get(target)
                entries[key] = self._entry(target[0], target[1], account, identity, identity.get("client_id"))
            entry = entries[key]
            entry["credentials"].append(self._credential_view(view))
        for key, entry in entries.items():
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
                }
            )
        return views


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
