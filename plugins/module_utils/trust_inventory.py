# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The reads behind aks.workload_identity.wid_info: clusters, identities, federated credentials, role assignments
and the clusters' AKS identity bindings from Azure, ServiceAccounts, workloads, pods, the ClusterRoles and
ClusterRoleBindings that may grant the use of an identity binding, and aad-pod-identity objects from Kubernetes,
each in as few list requests as the APIs allow, counted per operation. trust_map joins what this returns.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import concurrent.futures
import json
import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AzureModule
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways import ApiCalls
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import (
    Clusters,
    FederatedCredentials,
    Identities,
    IdentityBindings,
    RoleAssignments,
    RoleDefinitions,
    cluster_target,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import (
    ClusterRoleBindings,
    ClusterRoles,
    PodIdentityObjects,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import (
    K8S_EXCEPTIONS,
    K8sApiCaller,
    K8sModule,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    MAX_FEDERATED_CREDENTIALS_PER_IDENTITY,
    role_definition_guid,
    validate_cluster_name,
    validate_issuer,
    validate_namespace,
    validate_resource_group_name,
    validate_unique,
)

# Federated credentials can only be listed per identity. Four at a time keeps a large subscription quick while
# staying near the managed identity provider's list budget of 5 requests per second per subscription
# (azure-behaviour §4); azure-core retries a 429 after its Retry-After. Azure SDK clients are thread-safe
# (https://learn.microsoft.com/dotnet/azure/sdk/thread-safety; the Python SDK follows the same guidelines).
CREDENTIAL_LIST_WORKERS = 4
WORKLOAD_LISTS = (  # (result key, kind, client property, method suffix)
    ("deployments", "Deployment", "apps_v1", "deployment"),
    ("statefulsets", "StatefulSet", "apps_v1", "stateful_set"),
    ("daemonsets", "DaemonSet", "apps_v1", "daemon_set"),
    ("jobs", "Job", "batch_v1", "job"),
    ("cronjobs", "CronJob", "batch_v1", "cron_job"),
)


def validate(params: t.Mapping[str, t.Any]) -> list[str]:
    """Every input rule of wid_info's options, as "option: rule" messages, checked before any request. A list entry
    given twice is refused: it would be read twice, or (ARM names ignore case) name the same thing twice."""
    errors = []
    for index, cluster in enumerate(params["clusters"]):
        errors += validate_resource_group_name(cluster["resource_group"], f"clusters[{index}].resource_group")
        errors += validate_cluster_name(cluster["name"], f"clusters[{index}].name")
    cluster_ids = [f"{c['resource_group']}/{c['name']}" for c in params["clusters"]]
    errors += validate_unique(cluster_ids, "clusters", ignore_case=True)
    for index, url in enumerate(params["issuer_urls"]):
        errors += validate_issuer(url, f"issuer_urls[{index}]")
    errors += validate_unique(params["issuer_urls"], "issuer_urls")  # Entra compares issuers exactly
    for index, group in enumerate(params["identity_resource_groups"]):
        errors += validate_resource_group_name(group, f"identity_resource_groups[{index}]")
    errors += validate_unique(params["identity_resource_groups"], "identity_resource_groups", ignore_case=True)
    for index, namespace in enumerate(params["namespaces"]):
        errors += validate_namespace(namespace, f"namespaces[{index}]")
    errors += validate_unique(params["namespaces"], "namespaces")
    threshold = params["credential_warning_threshold"]
    if not 1 <= threshold <= MAX_FEDERATED_CREDENTIALS_PER_IDENTITY:
        errors.append(
            f"credential_warning_threshold: must be 1-{MAX_FEDERATED_CREDENTIALS_PER_IDENTITY}, got {threshold}"
        )
    return errors


# --- Azure --------------------------------------------------------------------------------------------------------
class AzureReader:
    def __init__(self, azure: AzureModule, calls: ApiCalls) -> None:
        self.azure = azure
        self.calls = calls

    def cluster(self, resource_group: str, name: str) -> dict[str, t.Any]:
        cluster = Clusters(self.azure, self.calls).get(resource_group, name)
        if cluster is None:
            target = cluster_target(resource_group, name)
            raise WorkloadIdentityError(f"Failed to read {target}: it does not exist", code="NotFound", target=target)
        keys = ("resource_group", "name", "issuer_url", "oidc_issuer_enabled", "workload_identity_enabled")
        return {key: cluster[key] for key in keys}

    def identities(self, resource_groups: list[str]) -> list[dict[str, t.Any]]:
        gateway = Identities(self.azure, self.calls)
        if not resource_groups:
            return gateway.list_in_subscription()
        found: list[dict[str, t.Any]] = []
        for group in resource_groups:
            found += gateway.list_in_resource_group(group) or []
        return found

    def all_credentials(self, identities: list[dict[str, t.Any]]) -> None:
        """Each identity's credentials (None when it disappeared since the identity list). No subscription-wide
        list of federated credentials exists: one list per identity, a few at a time."""
        if not identities:
            return
        gateway = FederatedCredentials(self.azure, self.calls)
        workers = min(CREDENTIAL_LIST_WORKERS, len(identities))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            listed = pool.map(lambda identity: gateway.list(identity["resource_group"], identity["name"]), identities)
            for identity, credentials in zip(identities, listed, strict=True):
                identity["credentials"] = credentials

    def identity_bindings(self, clusters: list[dict[str, t.Any]], warnings: list[str]) -> list[dict[str, t.Any]] | None:
        """Every identity binding of the clusters, one list per cluster, each with the cluster it was listed on
        (``cluster_resource_group``, ``cluster_name``, as the options name it). None, with a warning, when they
        cannot be read: an azure-mgmt-containerservice without identity bindings, or no right to list them (403);
        the audit then does not judge bindings, rather than failing where it used to succeed."""
        gateway = IdentityBindings(self.azure, self.calls)
        found: list[dict[str, t.Any]] = []
        for cluster in clusters:
            try:
                listed = gateway.list(cluster["resource_group"], cluster["name"])
            except WorkloadIdentityError as exc:
                if exc.code != "MissingRequiredLibrary" and exc.status != 403:
                    raise
                warnings.append(f"{exc}; identity bindings were not judged")
                return None
            for binding in listed or []:
                binding.update(cluster_resource_group=cluster["resource_group"], cluster_name=cluster["name"])
                found.append(binding)
        return found

    def role_assignments(self, principal_ids: set[str]) -> list[dict[str, t.Any]]:
        """The assignments of these principals: one list of the subscription's (at, above and below it)."""
        assignments = RoleAssignments(self.azure, self.calls).list_in_subscription()
        mine = [a for a in assignments if str(a.get("principal_id") or "").lower() in principal_ids]
        if any(not a.get("role_name") for a in mine):
            names = RoleDefinitions(self.azure, self.calls).names(f"/subscriptions/{self.azure.subscription_id}")
            for assignment in mine:
                guid = role_definition_guid(assignment.get("role_definition_id") or "")
                assignment["role_name"] = assignment.get("role_name") or names.get(guid or "")
        return mine


# --- Kubernetes ---------------------------------------------------------------------------------------------------
class KubeReader(K8sApiCaller):
    """Lists, each once across all namespaces; answers are read as the API server's JSON (camelCase)."""

    def __init__(self, kube: K8sModule, calls: ApiCalls, namespaces: list[str]) -> None:
        super().__init__(dry_run=False)
        self.kube = kube
        self.calls = calls
        self.namespaces = namespaces

    def _json(self, name: str, call: t.Callable[[], t.Any], action: str, target: str, **kwargs: t.Any) -> t.Any:
        self.calls.add(name)
        response = self._call(lambda: call(_preload_content=False), action, target, **kwargs)
        return None if response is None else json.loads(response.data)

    def _items(
        self,
        name: str,
        everywhere: t.Callable[..., t.Any],
        per_namespace: t.Callable[..., t.Any],
        what: str,
        *,
        none_if_not_found: bool = False,
    ) -> list[dict[str, t.Any]] | None:
        try:
            found = self._json(
                name, everywhere, f"list {what}", "in all namespaces", none_if_not_found=none_if_not_found
            )
        except WorkloadIdentityError as exc:
            if exc.status != 403 or not self.namespaces:
                raise
            # Allowed only in some namespaces: list each of those asked for.
            items: list[dict[str, t.Any]] = []
            for namespace in self.namespaces:
                found = self._json(
                    name,
                    lambda _preload_content, namespace=namespace: per_namespace(
                        namespace, _preload_content=_preload_content
                    ),
                    f"list {what}",
                    f"in namespace '{namespace}'",
                    none_if_not_found=none_if_not_found,
                )
                items += (found or {}).get("items") or []
            return items
        if found is None:
            return None
        items = found.get("items") or []
        if self.namespaces:
            items = [i for i in items if (i.get("metadata") or {}).get("namespace") in self.namespaces]
        return items

    def cluster_issuer(self) -> str | None:
        """The issuer in the API server's discovery document, or None when it cannot be read (403, 404).

        ServiceAccount issuer discovery (kubernetes.io/docs/tasks/configure-pod-container/configure-service-account,
        "Service account issuer discovery"): its "issuer" is the iss of the tokens the cluster signs, which on AKS
        is the cluster's OIDC issuer URL once the issuer is enabled.
        """
        self.calls.add("kubernetes.openid_configuration.get")
        try:
            well_known = self.kube._api("WellKnownApi")
            response = well_known.get_service_account_issuer_open_id_configuration(_preload_content=False)
            document = json.loads(response.data)
        except (*K8S_EXCEPTIONS, ValueError):
            return None
        issuer = document.get("issuer") if isinstance(document, dict) else None
        return issuer if isinstance(issuer, str) and issuer else None

    def service_accounts(self) -> list[dict[str, t.Any]]:
        core = self.kube.core_v1
        return (
            self._items(
                "kubernetes.serviceaccounts.list",
                core.list_service_account_for_all_namespaces,
                core.list_namespaced_service_account,
                "ServiceAccounts",
            )
            or []
        )

    def pods(self) -> list[dict[str, t.Any]]:
        core = self.kube.core_v1
        return (
            self._items("kubernetes.pods.list", core.list_pod_for_all_namespaces, core.list_namespaced_pod, "pods")
            or []
        )

    def workloads(self) -> list[dict[str, t.Any]]:
        workloads = []
        for key, kind, client, suffix in WORKLOAD_LISTS:
            api = getattr(self.kube, client)
            found = self._items(
                f"kubernetes.{key}.list",
                getattr(api, f"list_{suffix}_for_all_namespaces"),
                getattr(api, f"list_namespaced_{suffix}"),
                f"{kind}s",
            )
            workloads += [{"kind": kind, "document": document} for document in found or []]
        return workloads

    def identity_binding_rbac(self, warnings: list[str]) -> tuple[list[dict[str, t.Any]] | None, list[dict] | None]:
        """The cluster's ClusterRoles and ClusterRoleBindings, one list each (normalised by their gateways): trust_map
        finds the grants of use-managed-identity by their rules, whoever made them. (None, None), with a warning,
        when the connecting user may not list them (403): the audit then does not judge who may use a binding."""
        rbac = self.kube.rbac_v1
        try:
            roles = ClusterRoles(rbac, calls=self.calls, dry_run=False).list()
            bindings = ClusterRoleBindings(rbac, calls=self.calls, dry_run=False).list()
        except WorkloadIdentityError as exc:
            if exc.status != 403:
                raise
            warnings.append(f"{exc}; who may use identity bindings was not judged")
            return None, None
        return list(roles.values()), list(bindings.values())

    def pod_identity(self) -> dict[str, list[dict[str, t.Any]]]:
        """AzureIdentity and AzureIdentityBinding objects as API dicts, read through their gateway (shared with the
        pod_identity_migration module): one list each across namespaces, or of each namespace asked for when the
        connecting user may only list there (403). None installed (404: no CRD) reads as none."""
        gateway = PodIdentityObjects(self.kube._api("CustomObjectsApi"), calls=self.calls, dry_run=False)
        found = {}
        for key, kind in (("identities", "AzureIdentity"), ("bindings", "AzureIdentityBinding")):
            try:
                items = gateway.list_json(kind) or []
            except WorkloadIdentityError as exc:
                if exc.status != 403 or not self.namespaces:
                    raise
                items = [item for namespace in self.namespaces for item in gateway.list_json(kind, namespace) or []]
            if self.namespaces:
                items = [i for i in items if (i.get("metadata") or {}).get("namespace") in self.namespaces]
            found[key] = items
        return found


# --- The module ---------------------------------------------------------------------------------------------------
def inventory(azure: AzureModule, kube: K8sModule, params: t.Mapping[str, t.Any], calls: ApiCalls) -> dict[str, t.Any]:
    azure_reader, kube_reader = AzureReader(azure, calls), KubeReader(kube, calls, params["namespaces"])
    clusters = [azure_reader.cluster(c["resource_group"], c["name"]) for c in params["clusters"]]
    identities = azure_reader.identities(params["identity_resource_groups"])
    azure_reader.all_credentials(identities)
    assignments = None
    if params["include_role_assignments"] and identities:
        principals = {str(i.get("principal_id") or "").lower() for i in identities if i.get("principal_id")}
        assignments = azure_reader.role_assignments(principals)
    groups = params["identity_resource_groups"]
    warnings: list[str] = []
    bindings, roles, role_bindings = None, None, None
    if params["identity_bindings"]:
        # No cluster, no binding to list: None says "not read", so AKS's credential is not judged either.
        bindings = azure_reader.identity_bindings(clusters, warnings) if clusters else None
        roles, role_bindings = kube_reader.identity_binding_rbac(warnings)
    return {
        "clusters": clusters,
        "issuer_urls": params["issuer_urls"],
        "cluster_issuer": kube_reader.cluster_issuer(),
        "identities": identities,
        "identity_scope": f"resource group(s) {', '.join(groups)}"
        if groups
        else f"subscription {azure.subscription_id}",
        "role_assignments": assignments,
        "namespaces": params["namespaces"] or None,
        "service_accounts": kube_reader.service_accounts(),
        "workloads": kube_reader.workloads(),
        "pods": kube_reader.pods(),
        "pod_identity": kube_reader.pod_identity() if params["pod_identity"] else None,
        "identity_bindings": bindings,
        "cluster_roles": roles,
        "cluster_role_bindings": role_bindings,
        "warnings": warnings,
    }
