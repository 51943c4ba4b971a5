# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The proof of one workload's trust chain, step by step, for aks.workload_identity.wid_verify.

ServiceAccount -> cluster issuer -> federated credentials compared with the claims -> a TokenRequest token ->
the exchange at Microsoft Entra ID (azure-identity's ClientAssertionCredential, as the workload's own SDK does)
-> access with the result (a Key Vault secret or an ARM resource) -> the webhook's dry run. The diagnosis of each
failure (cause, fix, code) and the propagation retries are trust_check's; this file does the requests.

A workload that uses an AKS identity binding (``federation: identity_binding``, azure-behaviour §10) is proven in
another order, because its pod's settings come from the webhook: ServiceAccount (annotation, and the Kubernetes
RBAC grant asked as a SubjectAccessReview) -> the identity's binding on the cluster ("cluster") -> AKS's
``aks-identity-binding`` credential with the binding's issuer ("credential"), the three checked by
chain_checks.binding_problems -> the webhook's dry run of a pod annotated for the binding, which gives the token
proxy's URL, SNI name and CA (read from the projected ConfigMap) and the custom token audience -> a TokenRequest for
that audience -> the exchange through the proxy with azure-identity's own ``enable_azure_proxy=True`` path
(azure_client.proxy_credential), skipped with the reason when the proxy cannot be reached from here (on AKS it is
in-cluster) -> access as above.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import contextlib
import copy
import re
import ssl
import time
import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils import chain_checks
from ansible_collections.aks.workload_identity.plugins.module_utils import trust_check as tc
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import (
    ENV_KUBERNETES_CA_DATA,
    AzureError,
    AzureModule,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceManagementClient,
    ServiceRequestError,
    ServiceResponseError,
    TokenProxy,
    assertion_credential,
    azure_error,
    azure_error_parts,
    proxy_credential,
    token_proxy_unsupported,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
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
    AccessReviews,
    ClusterRoleBindings,
    ClusterRoles,
    ConfigMaps,
    Pods,
    ServiceAccounts,
    WebhookConfigurations,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import (
    K8sModule,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import k8s as kubernetes_client
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    ANNOTATION_CLIENT_ID,
    ANNOTATION_USE_IDENTITY_BINDING,
    DEFAULT_AUDIENCE,
    ENV_AUTHORITY_HOST,
    ENV_CLIENT_ID,
    ENV_FEDERATED_TOKEN_FILE,
    ENV_KUBERNETES_CA_FILE,
    ENV_KUBERNETES_SNI_NAME,
    ENV_KUBERNETES_TOKEN_PROXY,
    ENV_TENANT_ID,
    FEDERATIONS,
    IDENTITY_BINDING_CREDENTIAL_NAME,
    IDENTITY_BINDING_RBAC_VERB,
    LABEL_USE,
    LABEL_USE_VALUE,
    identity_binding_role_name,
    is_uuid,
    service_account_subject,
    validate_arm_api_version,
    validate_arm_resource_id,
    validate_audience,
    validate_cluster_name,
    validate_identity_name,
    validate_issuer,
    validate_keyvault_name,
    validate_keyvault_object_name,
    validate_keyvault_url,
    validate_namespace,
    validate_number,
    validate_resource_group_name,
    validate_service_account_name,
    validate_token_scope,
    validate_uuid,
    validate_wait_timeout,
)

# TokenRequestSpec.expirationSeconds: "The expiration can't be less than 10 minutes" (Kubernetes API reference,
# kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-request-v1/), and at most 2^32 seconds
# (kubernetes/kubernetes pkg/apis/authentication/validation/validation.go ValidateTokenRequest).
MIN_TOKEN_REQUEST_SECONDS = 600
MAX_TOKEN_REQUEST_SECONDS = 2**32
# Waits between retries double up to 30 seconds (trust_check.backoff): a first wait longer than that never doubles.
MAX_RETRY_INTERVAL = 30
# The webhook's name in its MutatingWebhookConfiguration (azure-workload-identity deploy/azure-wi-webhook.yaml).
WEBHOOK_NAME = "mutation.azure-workload-identity.io"
INJECTED_ENV = (ENV_CLIENT_ID, ENV_TENANT_ID, ENV_FEDERATED_TOKEN_FILE, ENV_AUTHORITY_HOST)
# What the webhook (v1.6.0's custom token endpoint, docs/lab.md §5) adds for a pod using an identity binding; the CA
# comes as a file (a projected ConfigMap or ClusterTrustBundle) and, when the webhook has CA data, as data too.
PROXY_ENV = (ENV_KUBERNETES_TOKEN_PROXY, ENV_KUBERNETES_SNI_NAME, ENV_KUBERNETES_CA_FILE)
FEDERATED_CREDENTIAL, IDENTITY_BINDING = FEDERATIONS
# Outcomes of the exchange through the proxy that are no answer of it (azure-core's ServiceRequestError).
UNREACHABLE, TLS_FAILED = "TokenProxyUnreachable", "TokenProxyTLSFailed"
# Which step of the proof a problem of chain_checks.binding_problems fails.
BINDING_STEPS = {
    chain_checks.BINDING_LINK: tc.CLUSTER,
    chain_checks.CREDENTIAL_LINK: tc.CREDENTIAL,
    chain_checks.ACCESS_LINK: tc.SERVICEACCOUNT,
}
_RESOURCE_GROUP_ID = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/?$", re.IGNORECASE)
_SUBSCRIPTION_OF = re.compile(r"^/subscriptions/(?P<sub>[^/]+)", re.IGNORECASE)


def validate(params: t.Mapping[str, t.Any]) -> list[str]:
    """Every input rule of wid_verify's options (and of those workloads_verify shares: options it lacks are
    skipped), as "option: rule" messages, checked before any request."""
    errors = validate_namespace(params["namespace"]) + validate_service_account_name(params["service_account"])
    for name in ("identity_client_id", "tenant_id"):
        if params.get(name) is not None:
            errors += validate_uuid(params[name], name)
    for name, check in (
        ("identity_resource_group", validate_resource_group_name),
        ("cluster_resource_group", validate_resource_group_name),
        ("identity_name", validate_identity_name),
        ("cluster_name", validate_cluster_name),
        ("issuer_url", validate_issuer),
        ("audience", validate_audience),
        ("scope", validate_token_scope),
        ("secret_name", validate_keyvault_object_name),
        ("arm_api_version", validate_arm_api_version),
    ):
        if params.get(name) is not None:
            errors += check(params[name], name)
    keyvault = params.get("keyvault")
    if keyvault is not None:
        # A vault name (the cloud's Key Vault suffix is added) or the vault's URL, as the option says.
        errors += (
            validate_keyvault_url(keyvault, "keyvault")
            if "://" in keyvault
            else validate_keyvault_name(keyvault, "keyvault")
        )
    seconds = params["token_expiration"]
    if not MIN_TOKEN_REQUEST_SECONDS <= seconds <= MAX_TOKEN_REQUEST_SECONDS:
        errors.append(
            f"token_expiration: must be between {MIN_TOKEN_REQUEST_SECONDS} and {MAX_TOKEN_REQUEST_SECONDS} seconds "
            f"(2^32), as the API server's TokenRequest accepts, got {seconds}"
        )
    errors += validate_wait_timeout(params["propagation_timeout"], "propagation_timeout", low=0)
    errors += validate_number(params["retry_interval"], "retry_interval", 1, MAX_RETRY_INTERVAL, "seconds")
    resource_id = params.get("arm_resource_id")
    if resource_id is not None:
        errors += validate_arm_resource_id(resource_id, "arm_resource_id")
        if not _RESOURCE_GROUP_ID.match(resource_id) and not params.get("arm_api_version"):
            errors.append("arm_api_version: is required to read a resource that is not a resource group")
    elif params.get("arm_api_version") is not None:
        errors.append("arm_api_version: only applies with arm_resource_id; set it too or leave arm_api_version out")
    if params.get("return_secret_value") and not keyvault:
        errors.append("return_secret_value: only applies with keyvault and secret_name, which read the secret")
    if params.get("federation") == IDENTITY_BINDING and params.get("audience") is not None:
        errors.append(
            "audience: with federation identity_binding the token's audience is the one the webhook injects for "
            "identity bindings (read from its dry run); leave audience out"
        )
    return errors


def _short(exc: WorkloadIdentityError) -> str:
    return tc.short_message(str(exc))


class Verifier:
    """Runs the steps of one verification and collects the result; one instance per module run."""

    def __init__(
        self,
        azure: AzureModule,
        kube: K8sModule,
        *,
        params: dict[str, t.Any] | None = None,
        preloaded: dict[str, t.Any] | None = None,
        sleep: t.Callable[[float], None] = time.sleep,
    ) -> None:
        """``params`` default to the module's; ``preloaded`` holds what a caller verifying many workloads has read
        already in its lists (``service_account``, ``cluster``, ``identity`` with its ``credentials``: None when
        absent), so that the verifier reads nothing twice."""
        self.azure, self.kube = azure, kube
        self.params = params if params is not None else azure.params
        self.preloaded = preloaded or {}
        self.check_mode = azure.check_mode
        self.sleep = sleep
        self.steps: dict[str, dict[str, t.Any]] = {}
        self.failure: tc.Diagnosis | None = None
        self.progress = tc.Progress()
        self.attempts = 0
        self.spent = 0.0
        self.token: str | None = None  # in memory only: never returned, logged or put in a message
        self.claims: dict[str, t.Any] | None = None
        self.service_account: t.Any = None
        self.identity: dict[str, t.Any] | None = None
        self.check: tc.CredentialCheck | None = None
        self.workload_credential: t.Any = None
        self.access: dict[str, t.Any] = {"kind": "none", "target": None, "status": tc.SKIPPED}
        self.webhook: dict[str, t.Any] = {
            "status": tc.SKIPPED,
            "reason": None,
            "injected_env": [],
            "token_volume": False,
            "token_audience": None,
            "token_proxy": None,
        }
        # Identity binding mode: the token's audience and the proxy's settings come from the webhook's dry run.
        self.binding_mode = self.params.get("federation") == IDENTITY_BINDING
        self.audience: str | None = None if self.binding_mode else (self.params.get("audience") or DEFAULT_AUDIENCE)
        self.binding: dict[str, t.Any] | None = None
        self.binding_agreement: list[chain_checks.BindingProblem] = []
        self.proxy: TokenProxy | None = None
        self.no_proxy_reason = "the webhook's dry run did not run"
        self.no_access_reason = "no access token"
        self._resources = contextlib.ExitStack()  # the proxy credential's private files, removed when the run ends
        namespace, name = self.params["namespace"], self.params["service_account"]
        self.expected: dict[str, t.Any] = {
            "issuer": self.params["issuer_url"],
            "subject": service_account_subject(namespace, name),
            "audience": self.audience,
            "client_id": self.params["identity_client_id"],
            "tenant_id": self.params["tenant_id"],
        }
        self.target = f"ServiceAccount '{namespace}/{name}'"

    # -- bookkeeping
    def record(self, step: str, status: str, detail: str) -> None:
        self.steps[step] = {"name": step, "status": status, "detail": tc.redact(detail, [self.token])}

    def fail(self, diagnosis: tc.Diagnosis, detail: str | None = None) -> None:
        self.record(diagnosis.step, tc.FAILED, detail or diagnosis.cause)
        if self.failure is None or tc.STEPS.index(diagnosis.step) < tc.STEPS.index(self.failure.step):
            self.failure = diagnosis

    def skip(self, step: str, reason: str) -> None:
        if step not in self.steps:
            self.record(step, tc.SKIPPED, reason)

    def log(self, line: str) -> None:
        self.azure.module.debug(line)

    # -- the chain
    def run(self) -> dict[str, t.Any]:
        with self._resources:
            if self.binding_mode:
                self.read_service_account()
                self.read_credentials()
                self.check_binding()
                self.dry_run_webhook()  # before the token: its audience and the proxy's settings come from it
                self.request_token()
                self.exchange()
                self.prove_access()
            else:
                self.read_service_account()
                self.read_cluster()
                self.read_credentials()
                self.request_token()
                self.compare()
                self.exchange()
                self.prove_access()
                self.dry_run_webhook()
            return self.result()

    def read_service_account(self) -> None:
        namespace, name = self.params["namespace"], self.params["service_account"]
        if "service_account" in self.preloaded:
            self.service_account = self.preloaded["service_account"]
        else:
            self.service_account = ServiceAccounts(self.kube.core_v1, dry_run=False).read(namespace, name)
        if self.service_account is None:
            self.fail(
                tc.Diagnosis(
                    tc.SERVICEACCOUNT,
                    f"{self.target} does not exist, so pods cannot use it and no token can be requested for it",
                    "create and annotate it with aks.workload_identity.wid_service_account",
                    "NotFound",
                )
            )
            self._resolve_ids(None, None)
            return
        annotated, annotated_tenant = self.service_account["client_id"], self.service_account["tenant_id"]
        wanted = self.params["identity_client_id"]
        if not annotated:
            self.fail(
                tc.Diagnosis(
                    tc.SERVICEACCOUNT,
                    f"{self.target} has no {ANNOTATION_CLIENT_ID} annotation, so the webhook gives its pods no "
                    f"{ENV_CLIENT_ID} (azure-identity then finds no token file or client ID)",
                    f"annotate it with the identity's client ID (aks.workload_identity.wid_service_account client_id: "
                    f"{wanted or '<client ID>'})",
                    "MissingAnnotation",
                )
            )
        elif not is_uuid(annotated):
            self.fail(
                tc.Diagnosis(
                    tc.SERVICEACCOUNT,
                    f"the {ANNOTATION_CLIENT_ID} annotation of {self.target} is {annotated!r}, not a client ID (GUID)",
                    "set it to the managed identity's client ID (aks.workload_identity.wid_service_account)",
                    "InvalidAnnotation",
                )
            )
        elif wanted and annotated.lower() != wanted.lower():
            self.fail(
                tc.Diagnosis(
                    tc.SERVICEACCOUNT,
                    f"the {ANNOTATION_CLIENT_ID} annotation of {self.target} names {annotated!r} but "
                    f"identity_client_id is {wanted!r}; pods get the annotation's client ID",
                    f"set the annotation to {wanted!r} (aks.workload_identity.wid_service_account) or correct "
                    "identity_client_id",
                    "ClientIdMismatch",
                )
            )
        else:
            self.record(tc.SERVICEACCOUNT, tc.PASSED, f"{self.target} exists and names client ID {annotated!r}")
        self._resolve_ids(annotated if is_uuid(annotated) else None, annotated_tenant)

    def _resolve_ids(self, annotated: str | None, annotated_tenant: str | None) -> None:
        self.expected["client_id"] = self.params["identity_client_id"] or annotated
        self.expected["tenant_id"] = self.params["tenant_id"] or annotated_tenant or self.params["tenant"]

    def read_cluster(self) -> None:
        if self.params["issuer_url"]:
            self.record(tc.CLUSTER, tc.PASSED, f"issuer {self.params['issuer_url']!r} from issuer_url")
            return
        group, name = self.params["cluster_resource_group"], self.params["cluster_name"]
        if not name:
            self.skip(tc.CLUSTER, "neither cluster_name nor issuer_url was given: the token's issuer is used")
            return
        target = cluster_target(group, name)
        cluster = self.preloaded["cluster"] if "cluster" in self.preloaded else Clusters(self.azure).get(group, name)
        if cluster is None:
            self.fail(
                tc.Diagnosis(tc.CLUSTER, f"the {target} does not exist", "check cluster_name", "ResourceNotFound")
            )
            return
        if not cluster["oidc_issuer_enabled"] or not cluster["issuer_url"]:
            self.fail(
                tc.Diagnosis(
                    tc.CLUSTER,
                    f"the OIDC issuer of the {target} is not enabled (its issuer URL is blank), so Entra ID cannot "
                    "verify the cluster's ServiceAccount tokens",
                    "enable it with aks.workload_identity.aks_oidc (oidc_issuer: true, workload_identity: true) and "
                    "federate with the issuer URL it returns",
                    "OIDCIssuerNotEnabled",
                )
            )
            return
        self.expected["issuer"] = cluster["issuer_url"]
        self.record(tc.CLUSTER, tc.PASSED, f"the {target} publishes OIDC issuer {cluster['issuer_url']!r}")

    def read_credentials(self) -> None:
        """The identity (by name, or by client ID in the subscription) and its federated credentials."""
        client_id = self.expected["client_id"]
        group, name = self.params["identity_resource_group"], self.params["identity_name"]
        try:
            if name:
                if "identity" in self.preloaded:
                    self.identity = copy.deepcopy(self.preloaded["identity"])  # the verifier adds to it
                else:
                    self.identity = Identities(self.azure).get(group, name)
                if self.identity is None:
                    self.fail(
                        tc.Diagnosis(
                            tc.CREDENTIAL,
                            f"managed identity '{name}' in resource group '{group}' does not exist",
                            "create it with aks.workload_identity.managed_identity or correct identity_name",
                            "ResourceNotFound",
                        )
                    )
                    return
                if client_id and str(self.identity["client_id"]).lower() != client_id.lower():
                    self.fail(
                        tc.Diagnosis(
                            tc.CREDENTIAL,
                            f"managed identity '{name}' has client ID {self.identity['client_id']!r}, not the "
                            f"ServiceAccount's {client_id!r}",
                            f"annotate the ServiceAccount with {self.identity['client_id']!r} or name the right "
                            "identity",
                            "ClientIdMismatch",
                        )
                    )
                    return
                client_id = self.expected["client_id"] = client_id or self.identity["client_id"]
            elif client_id:
                self.identity = Identities(self.azure).find_by_client_id(client_id)
            if self.identity is None:
                why = f"no user-assigned identity in subscription '{self.azure.subscription_id}' has client ID "
                self.skip(tc.CREDENTIAL, why + f"{client_id!r}: nothing to compare" if client_id else "no client ID")
                return
            if "credentials" in self.identity:
                credentials = self.identity["credentials"]
            else:
                credentials = FederatedCredentials(self.azure).list(
                    self.identity["resource_group"] or "", self.identity["name"]
                )
        except WorkloadIdentityError as exc:
            if exc.status in (401, 403):  # cannot check: the exchange's answer is diagnosed alone
                self.skip(tc.CREDENTIAL, f"the federated credentials could not be read: {_short(exc)}")
                return
            raise
        self.identity["credentials"] = credentials or []

    # -- identity binding: agreement (chain_checks.binding_problems)
    def check_binding(self) -> None:
        """The identity's binding on the cluster, AKS's credential on the identity and the RBAC grant, checked by
        chain_checks from one list of the cluster's bindings and one SubjectAccessReview (plus two RBAC GETs to say
        why when it is denied); a read the module's login may not make skips its link."""
        if self.identity is None:
            self.skip(tc.CLUSTER, "the identity was not read, so its binding cannot be looked for")
            return
        group, name = self.params["cluster_resource_group"], self.params["cluster_name"]
        errors: dict[str, str] = {}
        bindings = self._read_or_skip("bindings", errors, lambda: IdentityBindings(self.azure).list(group, name))
        if "credentials" not in self.identity:
            errors["credentials"] = "they could not be read"
        review, rbac = self._review_access(errors)
        self.binding_agreement, self.binding = chain_checks.binding_problems(
            namespace=self.params["namespace"],
            service_account=self.params["service_account"],
            identity=self.identity,
            cluster=cluster_target(group, name),
            bindings=bindings if "bindings" not in errors else [],
            credentials=self.identity.get("credentials"),
            review=review,
            rbac=rbac,
            errors=errors,
        )
        for link, step in BINDING_STEPS.items():
            found = [p for p in self.binding_agreement if p.link == link]
            if found and found[0].code == chain_checks.UNREADABLE:
                self.skip(step, found[0].text)
            elif found:
                self.fail(tc.Diagnosis(step, "; ".join(p.text for p in found), found[0].fix, found[0].code))
            else:
                self._binding_passed(step, review)

    def _read_or_skip(self, key: str, errors: dict[str, str], read: t.Callable[[], t.Any]) -> t.Any:
        """``read()``, or what ``workloads_verify`` preloaded under ``key``; refused (401/403): noted in ``errors``."""
        if key in self.preloaded:
            return self.preloaded[key]
        try:
            return read()
        except WorkloadIdentityError as exc:
            if exc.status not in (401, 403):
                raise
            errors[key] = _short(exc)
            return None

    def _review_access(self, errors: dict[str, str]) -> tuple[dict[str, t.Any] | None, t.Any]:
        """The API server's answer to "may the ServiceAccount use the identity" (a SubjectAccessReview: a question,
        stored nowhere, so asked in check mode too) and, when denied, our ClusterRole and ClusterRoleBinding."""
        client_id = (self.identity or {}).get("client_id")
        if self.service_account is None or not client_id:
            return None, None
        namespace, name = self.params["namespace"], self.params["service_account"]
        reviews = AccessReviews(self.kube.authorization_v1, calls=self.azure.calls, dry_run=False)
        review = self._read_or_skip("review", errors, lambda: reviews.can_use_identity(namespace, name, client_id))
        if review is None or review.get("allowed"):
            return review, None

        def read_rbac() -> tuple[t.Any, t.Any]:
            role_name = identity_binding_role_name(client_id)
            roles = ClusterRoles(self.kube.rbac_v1, calls=self.azure.calls, dry_run=False)
            bindings = ClusterRoleBindings(self.kube.rbac_v1, calls=self.azure.calls, dry_run=False)
            return roles.read(role_name), bindings.read(role_name)

        return review, self._read_or_skip("rbac", errors, read_rbac)

    def _binding_passed(self, step: str, review: dict[str, t.Any] | None) -> None:
        binding, identity = self.binding or {}, self.identity or {}
        where = f"managed identity '{identity.get('name')}'"
        if step == tc.CLUSTER:
            cluster = cluster_target(self.params["cluster_resource_group"], self.params["cluster_name"])
            self.record(
                step,
                tc.PASSED,
                f"identity binding '{binding.get('name')}' binds {where} to the {cluster} "
                f"({binding.get('provisioning_state')}, issuer {binding.get('issuer_url')!r})",
            )
        elif step == tc.CREDENTIAL and self.binding is not None:
            self.record(
                step,
                tc.PASSED,
                f"federated credential '{IDENTITY_BINDING_CREDENTIAL_NAME}' of {where} trusts the binding's issuer "
                "(AKS manages it for every bound ServiceAccount: the workload needs no credential of its own)",
            )
        elif step == tc.CREDENTIAL:
            self.skip(step, "no identity binding: AKS's credential has no issuer to be compared with")
        elif review is not None and self.steps.get(step, {}).get("status") == tc.PASSED:
            self.record(
                step,
                tc.PASSED,
                self.steps[step]["detail"] + f"; Kubernetes RBAC lets it {IDENTITY_BINDING_RBAC_VERB} the identity",
            )

    def request_token(self) -> None:
        if self.check_mode:
            self.skip(tc.TOKEN, "check mode: no token is requested (a TokenRequest is a write)")
            return
        if self.service_account is None:
            self.skip(tc.TOKEN, f"{self.target} does not exist")
            return
        if self.audience is None:  # identity binding mode without the webhook's custom audience
            self.skip(tc.TOKEN, f"no token audience for the identity binding is known: {self.no_proxy_reason}")
            return
        namespace, name = self.params["namespace"], self.params["service_account"]
        try:
            token = ServiceAccounts(self.kube.core_v1, dry_run=False).request_token(
                namespace, name, self.audience, self.params["token_expiration"]
            )
        except WorkloadIdentityError as exc:
            if exc.status is None:
                raise  # cannot connect: always a failure of the task
            self.fail(
                tc.Diagnosis(
                    tc.TOKEN,
                    _short(exc),
                    f"allow the connecting user to create serviceaccounts/token in namespace '{namespace}'",
                    exc.code,
                )
            )
            return
        self.token = token
        self.claims = tc.decode_claims(self.token)
        issuer = str(self.claims.get("iss") or "")
        expected_issuer = self.expected["issuer"]
        detail = f"token for audience {self.audience!r} issued by {issuer!r}"
        if self.binding_mode:
            # The AKS token proxy checks this token against the cluster's own keys; Entra ID never sees it.
            self.expected["issuer"] = issuer
            self.record(tc.TOKEN, tc.PASSED, detail + f", expiring {tc.timestamp(self.claims.get('exp'))}")
            return
        if expected_issuer and issuer != expected_issuer:
            source = "issuer_url" if self.params["issuer_url"] else "the cluster's OIDC issuer"
            self.fail(tc.token_issuer_mismatch(expected_issuer, issuer, source))
        else:
            self.record(tc.TOKEN, tc.PASSED, detail + f", expiring {tc.timestamp(self.claims.get('exp'))}")
        self.expected["issuer"] = expected_issuer or issuer

    def compare(self) -> None:
        if self.identity is None or "credentials" not in self.identity:
            self.skip(tc.CREDENTIAL, "the identity's federated credentials were not read")
            return
        if self.claims is not None:
            issuer, subject = str(self.claims.get("iss") or ""), str(self.claims.get("sub") or "")
        elif self.expected["issuer"]:
            issuer, subject = self.expected["issuer"], self.expected["subject"]
        else:
            self.skip(tc.CREDENTIAL, "no issuer to compare with (set cluster_name or issuer_url for check mode)")
            return
        where = f"managed identity '{self.identity['name']}'"
        self.check = tc.compare_credentials(self.identity["credentials"], issuer, subject, self.audience, where)
        if self.check.status == tc.PASSED:
            name = (self.check.match or {}).get("name")
            self.record(tc.CREDENTIAL, tc.PASSED, f"federated credential '{name}' of {where} matches exactly")
        elif self.check.diagnosis is not None:
            # In check mode the code is the one Entra would answer with; a real run confirms it at the exchange.
            self.fail(self.check.diagnosis)

    def exchange(self) -> None:
        if self.check_mode:
            self.skip(tc.EXCHANGE, "check mode")
            return
        if self.binding_mode:
            self.exchange_through_proxy()
            return
        client_id, tenant = self.expected["client_id"], self.expected["tenant_id"]
        if self.token is None or not client_id or not tenant:
            self.skip(tc.EXCHANGE, "no token" if self.token is None else "no client ID or tenant to exchange for")
            return
        token = self.token
        self.workload_credential = assertion_credential(self.azure.cloud, self.params, tenant, client_id, token)
        scope = self.scope()

        def attempt() -> tuple[str | None, str | None, t.Any]:
            try:
                return None, None, self.workload_credential.get_token(scope)
            except AzureError as exc:
                if isinstance(exc, ClientAuthenticationError):
                    code, message, _status = azure_error_parts(exc)
                    return code, tc.redact(message, [token]), None
                # Entra ID cannot be reached: a failure of the task, not of the verification.
                raise azure_error(
                    exc, "exchange the ServiceAccount token at Entra ID for client ID", client_id
                ) from None

        def diagnose(outcome: tuple[str | None, str | None, t.Any]) -> tc.Diagnosis | None:
            code, message, access_token = outcome
            if access_token is not None:
                return None
            return tc.diagnose_exchange(
                code, message, self.check, client_id=client_id, tenant_id=tenant, claims=self.claims or {}
            )

        outcome = self.retry(attempt, diagnose)
        diagnosis = diagnose(outcome)
        if diagnosis is None:
            if self.check is not None and self.check.status == tc.FAILED:  # Entra accepted what ARM did not show
                self.steps.pop(tc.CREDENTIAL, None)
                self.failure = None if self.failure and self.failure.step == tc.CREDENTIAL else self.failure
                self.record(tc.CREDENTIAL, tc.PASSED, "Entra ID accepted the token (the credential list differs)")
            self.record(tc.EXCHANGE, tc.PASSED, f"Entra ID issued an access token of {client_id!r} for {scope!r}")
            return
        if diagnosis.step == tc.CREDENTIAL:  # the mismatch found before; Entra's code confirms it
            if self.failure is not None and self.failure.step == tc.CREDENTIAL:
                self.failure = diagnosis
            self.record(tc.EXCHANGE, tc.FAILED, f"Entra ID refused the token with {diagnosis.code}")
            return
        if diagnosis.propagation:  # still refused when the time was up
            diagnosis = tc.Diagnosis(
                tc.EXCHANGE,
                diagnosis.cause + f" (still refused after {self.spent:.0f} s)",
                diagnosis.fix,
                diagnosis.code,
            )
        self.fail(diagnosis)

    # -- identity binding: the exchange through the AKS token proxy
    def exchange_through_proxy(self) -> None:
        """The pod's own exchange: azure-identity's WorkloadIdentityCredential(enable_azure_proxy=True) with the
        settings the webhook injected. A proxy this host cannot reach (it is in-cluster on AKS) skips the exchange
        and the access with the reason: only a pod can prove them then."""
        client_id, tenant = self.expected["client_id"], self.expected["tenant_id"]
        if self.token is None or not client_id or not tenant:
            self.skip(tc.EXCHANGE, "no token" if self.token is None else "no client ID or tenant to exchange for")
            return
        if self.proxy is None:
            self.skip(tc.EXCHANGE, f"the token proxy's settings are not known: {self.no_proxy_reason}")
            return
        unsupported = token_proxy_unsupported()
        if unsupported:
            self.skip(tc.EXCHANGE, unsupported)
            return
        proxy, token = self.proxy, self.token
        try:
            self.workload_credential = self._resources.enter_context(
                proxy_credential(self.azure.cloud, self.params, tenant, client_id, token, proxy)
            )
        except ValueError as exc:
            self.fail(
                tc.Diagnosis(
                    tc.EXCHANGE,
                    f"azure-identity refuses the token proxy settings the webhook injects: {exc}",
                    "a pod would be refused the same: fix the webhook's custom token endpoint settings",
                    "InvalidTokenProxySettings",
                )
            )
            return
        scope = self.scope()

        def attempt() -> tuple[str | None, str | None, t.Any]:
            try:
                return None, None, self.workload_credential.get_token(scope)
            except AzureError as exc:
                if isinstance(exc, ClientAuthenticationError):  # an answer: the proxy's, or Entra's through it
                    code, message, _status = azure_error_parts(exc)
                    return code, tc.redact(message, [token]), None
                if isinstance(exc, (ServiceRequestError, ServiceResponseError)):  # no answer
                    return (TLS_FAILED if _tls_failure(exc) else UNREACHABLE), tc.redact(str(exc), [token]), None
                raise azure_error(
                    exc, "exchange the ServiceAccount token through the AKS token proxy for", client_id
                ) from None

        def diagnose(outcome: tuple[str | None, str | None, t.Any]) -> tc.Diagnosis | None:
            code, message, access_token = outcome
            if access_token is not None or code == UNREACHABLE:
                return None
            return self._diagnose_proxy(code, message, client_id, tenant)

        outcome = self.retry(attempt, diagnose)
        code, message = outcome[0], outcome[1]
        where = f"the AKS token proxy {proxy.endpoint} (server name {proxy.sni_name})"
        if code == UNREACHABLE:
            self.workload_credential = None
            self.no_access_reason = "no access token: the AKS token proxy cannot be reached from this host"
            self.skip(
                tc.EXCHANGE,
                f"{where} cannot be reached from this host ({tc.short_message(message)}): on AKS it is served inside "
                "the cluster, so only a pod there can make this exchange; what this host can check (the binding, "
                "AKS's credential, the RBAC grant, the webhook's injection, the token) is in the other steps",
            )
            return
        diagnosis = diagnose(outcome)
        if diagnosis is None:
            self.record(tc.EXCHANGE, tc.PASSED, f"{where} exchanged the token for an access token of {client_id!r}")
            return
        if diagnosis.step != tc.EXCHANGE:  # a problem the agreement found; the proxy's answer confirms it
            self.record(tc.EXCHANGE, tc.FAILED, f"{where} refused the token: {tc.short_message(message) or code}")
        elif diagnosis.propagation:
            diagnosis = tc.Diagnosis(
                tc.EXCHANGE,
                diagnosis.cause + f" (still refused after {self.spent:.0f} s)",
                diagnosis.fix,
                diagnosis.code,
            )
        self.fail(diagnosis)

    def _diagnose_proxy(self, code: str | None, message: str | None, client_id: str, tenant: str) -> tc.Diagnosis:
        """Why the exchange through the proxy failed. Entra's AADSTS codes come back through it unchanged; the
        proxy's own refusals are not public (azure-behaviour §10), so they are explained by the agreement's first
        problem when there is one, and quoted otherwise."""
        proxy = t.cast(TokenProxy, self.proxy)
        said = tc.short_message(message)
        if code == TLS_FAILED:
            return tc.Diagnosis(
                tc.EXCHANGE,
                f"the TLS handshake with the AKS token proxy {proxy.endpoint} (server name {proxy.sni_name}) failed: "
                f"its certificate is not one the injected CA verifies for that name ({said})",
                "check that the CA the webhook projects (ConfigMap kube-root-ca.crt) is the cluster's and that "
                f"{ENV_KUBERNETES_SNI_NAME} names the proxy; from outside the cluster the address may reach another "
                "server",
                TLS_FAILED,
            )
        blocking = next((p for p in self.binding_agreement if p.code != chain_checks.UNREADABLE), None)
        if code in tc.NO_MATCH_CODES:
            trusted = blocking is None or blocking.link == chain_checks.ACCESS_LINK
            if trusted and code in tc.PROPAGATION_EXCHANGE_CODES:
                return tc.Diagnosis(
                    tc.EXCHANGE,
                    f"Entra ID refuses the token the AKS token proxy presented for the identity with {code} although "
                    f"federated credential '{IDENTITY_BINDING_CREDENTIAL_NAME}' trusts the binding's issuer: the "
                    "credential has not propagated to Entra ID yet",
                    "wait a few minutes and run again, or raise propagation_timeout (new credentials can take minutes)",
                    code,
                    propagation=True,
                )
        elif code and code.startswith("AADSTS"):
            return tc.diagnose_exchange(code, message, None, client_id=client_id, tenant_id=tenant, claims={})
        if blocking is not None:  # the agreement's code says more than an OAuth error name (unauthorized_client)
            return tc.Diagnosis(BINDING_STEPS[blocking.link], blocking.text, blocking.fix, blocking.code)
        return tc.Diagnosis(
            tc.EXCHANGE,
            f"the AKS token proxy {proxy.endpoint} refused the token of {self.target}: {said or code}",
            "check the identity's binding on the cluster, the RBAC grant (use-managed-identity) and that the token's "
            "audience is the one the webhook injects",
            code or "TokenProxyRefused",
        )

    def retry(self, attempt: t.Callable[[], t.Any], diagnose: t.Callable[[t.Any], tc.Diagnosis | None]) -> t.Any:
        """``attempt()`` again while ``diagnose`` calls its outcome propagation, within what is left of the
        propagation_timeout (one budget for the exchange and the access read)."""

        def describe(outcome: t.Any) -> str | None:
            diagnosis = diagnose(outcome)
            return diagnosis.cause if diagnosis is not None and diagnosis.propagation else None

        outcome, attempts, spent = tc.retry_while_propagating(
            attempt,
            describe,
            timeout=max(0.0, self.params["propagation_timeout"] - self.spent),
            interval=self.params["retry_interval"],
            progress=self.progress,
            sleep=self.sleep,
            log=self.log,
        )
        self.attempts += attempts
        self.spent += spent
        return outcome

    def scope(self) -> str:
        if self.params["scope"]:
            return self.params["scope"]
        suffix = self.azure.cloud.keyvault_dns_suffix
        if self.params["keyvault"] and suffix:
            # azure-behaviour §7: Key Vault's token audience is https://vault.azure.net for vaults under
            # .vault.azure.net.
            return f"https://{suffix.lstrip('.')}/.default"
        return self.azure.cloud.credential_scopes[0]

    # -- access
    def prove_access(self) -> None:
        kind = "keyvault" if self.params["keyvault"] else "arm" if self.params["arm_resource_id"] else "none"
        self.access["kind"] = kind
        if kind == "none":
            self.skip(tc.ACCESS, "neither keyvault nor arm_resource_id was given")
            return
        if kind == "keyvault":
            self.access["target"] = (
                self.azure.keyvault_url(self.params["keyvault"]) + "secrets/" + self.params["secret_name"]
            )
        else:
            self.access["target"] = self.params["arm_resource_id"]
        if self.check_mode or self.workload_credential is None or tc.EXCHANGE not in self.steps:
            self.skip(tc.ACCESS, "check mode" if self.check_mode else self.no_access_reason)
            return
        if self.steps[tc.EXCHANGE]["status"] != tc.PASSED:
            self.skip(tc.ACCESS, self.no_access_reason)
            return
        read = self._read_secret if kind == "keyvault" else self._read_resource
        grants: dict[str, tc.GrantCheck] = {}

        def diagnose(outcome: tuple[t.Any, str | None, str | None], waited: float | None = None) -> tc.Diagnosis | None:
            code, message = outcome[1], outcome[2]
            if code is None:
                return None
            grant = None
            if code in tc.PROPAGATION_ACCESS_CODES:
                if code not in grants:
                    grants[code] = self.grant(message, data=kind == "keyvault")
                grant = grants[code]
            return tc.diagnose_access(
                kind, self.access["target"], code, message, principal=self.principal_text(), grant=grant, waited=waited
            )

        outcome = self.retry(read, diagnose)
        diagnosis = diagnose(outcome, waited=self.spent)
        if diagnosis is not None:
            self.access["status"] = tc.FAILED
            self.fail(diagnosis)
            return
        self.access["status"] = tc.PASSED
        what = "secret" if kind == "keyvault" else "resource"
        self.record(tc.ACCESS, tc.PASSED, f"the identity read the {what} {self.access['target']}")
        if kind == "keyvault" and self.params["return_secret_value"]:
            self.access["secret_value"] = outcome[0]

    def principal_text(self) -> str:
        if self.identity is not None:
            return f"managed identity '{self.identity['name']}' (principal ID {self.identity.get('principal_id')})"
        return f"the identity with client ID {self.expected['client_id']!r}"

    def _read_secret(self) -> tuple[t.Any, str | None, str | None]:
        self.azure.require("azure-keyvault-secrets")
        client = self.azure.keyvault_secret_client(self.params["keyvault"], self.workload_credential)
        try:
            return client.get_secret(self.params["secret_name"]).value, None, None
        except AzureError as exc:
            if isinstance(exc, HttpResponseError) and exc.status_code is not None:
                return (None, *_access_error(exc))
            raise azure_error(exc, "read secret", self.access["target"]) from None

    def _read_resource(self) -> tuple[t.Any, str | None, str | None]:
        self.azure.require("azure-mgmt-resource")
        resource_id = self.params["arm_resource_id"]
        subscription = _SUBSCRIPTION_OF.match(resource_id).group("sub")
        client = ResourceManagementClient(self.workload_credential, subscription, **self.azure.mgmt_client_kwargs())
        group = _RESOURCE_GROUP_ID.match(resource_id)
        try:
            if group:
                return client.resource_groups.get(group.group("rg")).id, None, None
            return client.resources.get_by_id(resource_id, api_version=self.params["arm_api_version"]).id, None, None
        except AzureError as exc:
            if isinstance(exc, HttpResponseError) and exc.status_code is not None:
                return (None, *_access_error(exc))
            raise azure_error(exc, "read", resource_id) from None

    def grant(self, message: str | None, *, data: bool) -> tc.GrantCheck:
        """Whether one of the identity's role assignments allows the refused action (read with our own login)."""
        action, resource = tc.denied_action(message)
        principal_id = (self.identity or {}).get("principal_id")
        if not action or not resource or not principal_id:
            return tc.GrantCheck(tc.GRANT_UNKNOWN, reason="the refused action or the identity's principal is unknown")
        try:
            assignments = RoleAssignments(self.azure).list_for_principal(resource, principal_id)
        except WorkloadIdentityError as exc:
            return tc.GrantCheck(tc.GRANT_UNKNOWN, reason=f"the role assignments could not be read: {_short(exc)}")
        definitions: dict[str, t.Any] = {}
        for assignment in assignments:
            definition_id = str(assignment.get("role_definition_id") or "")
            if tc.scope_covers(assignment.get("scope"), resource) and definition_id.lower() not in definitions:
                definitions[definition_id.lower()] = self._permissions(definition_id)
        return tc.evaluate_grant(assignments, definitions, action, resource, data=data)

    def _permissions(self, definition_id: str) -> list[dict[str, t.Any]] | None:
        try:
            return RoleDefinitions(self.azure).permissions(definition_id)
        except WorkloadIdentityError:
            return None

    # -- webhook
    def dry_run_webhook(self) -> None:
        if not self.params["webhook_dry_run"]:
            self.no_proxy_reason = "webhook_dry_run is false (the proxy's settings and the audience come from it)"
            self._webhook(tc.SKIPPED, "webhook_dry_run is false")
            return
        if self.service_account is None:
            self.no_proxy_reason = f"{self.target} does not exist"
            self._webhook(tc.SKIPPED, f"{self.target} does not exist")
            return
        namespace = self.params["namespace"]
        metadata: dict[str, t.Any] = {"generateName": "wid-verify-", "labels": {LABEL_USE: LABEL_USE_VALUE}}
        if self.binding_mode:
            metadata["annotations"] = {ANNOTATION_USE_IDENTITY_BINDING: "true"}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {
                "serviceAccountName": self.params["service_account"],
                "containers": [{"name": "wid-verify", "image": "mcr.microsoft.com/azure-cli"}],
            },
        }
        try:
            document = Pods(self.kube.core_v1, dry_run=False).create_dry_run(namespace, pod)
        except WorkloadIdentityError as error:
            if error.status is None:
                raise
            self.no_proxy_reason = f"the webhook's dry run did not succeed: {_short(error)}"
            if error.status == 403 and "admission webhook" not in str(error):
                self._webhook(tc.SKIPPED, f"pods cannot be created (dry run) in '{namespace}': {_short(error)}")
            else:
                self._webhook(tc.FAILED, f"the dry-run pod was refused: {_short(error)}", error.code)
            return
        if self.binding_mode:
            self.check_proxy_injection(document)
            return
        injected, volume = injected_settings(document, self.audience)
        self.webhook.update(injected_env=injected, token_volume=volume)
        self.webhook.update(token_audience=self.audience if volume else None)
        if injected or volume:
            missing = [name for name in INJECTED_ENV if name not in injected]
            if missing or not volume:
                lacking = missing + ([] if volume else [f"a projected token volume for {self.audience!r}"])
                self._webhook(tc.FAILED, f"the webhook mutated the pod but it lacks {', '.join(lacking)}")
            else:
                self._webhook(tc.PASSED, f"the webhook injected {', '.join(injected)} and the token volume")
            return
        self._webhook_not_injected()

    def _webhook_not_injected(self) -> None:
        api = kubernetes_client.AdmissionregistrationV1Api(self.kube.api_client)
        try:
            holders = WebhookConfigurations(api, dry_run=False).holding(WEBHOOK_NAME)
        except WorkloadIdentityError as error:
            if error.status is None:
                raise
            self._webhook(tc.SKIPPED, f"nothing was injected and the webhooks cannot be listed: {_short(error)}")
            return
        if not holders:
            self._webhook(
                tc.SKIPPED,
                f"no MutatingWebhookConfiguration holds the webhook {WEBHOOK_NAME}: the azure-workload-identity "
                "webhook is not installed (AKS installs it when workload identity is enabled)",
            )
            return
        self._webhook(
            tc.FAILED,
            f"the webhook {WEBHOOK_NAME} is registered ({', '.join(holders)}) but did not mutate a pod labelled "
            f"{LABEL_USE}: {LABEL_USE_VALUE!r} using {self.target}",
        )

    def check_proxy_injection(self, document: dict[str, t.Any]) -> None:
        """The webhook's mutation of a pod annotated for the identity binding: the usual variables, the token proxy's
        (URL, SNI name, CA file) and a projected token for a custom audience; then the CA the pod would trust, read
        from the projected ConfigMap (one GET; in check mode too, as it decides whether the pods can start)."""
        found = proxy_injection(document)
        env, audience = found["env"], found["audience"]
        self.webhook.update(
            injected_env=found["injected"],
            token_volume=audience is not None,
            token_audience=audience,
            token_proxy=env.get(ENV_KUBERNETES_TOKEN_PROXY),
        )
        if not found["injected"] and audience is None:
            self.no_proxy_reason = "the webhook did not mutate the dry-run pod"
            self._webhook_not_injected()
            return
        if ENV_KUBERNETES_TOKEN_PROXY not in env:
            self.no_proxy_reason = "the webhook injected no token proxy"
            self._webhook(
                tc.FAILED,
                f'the webhook mutated the pod annotated {ANNOTATION_USE_IDENTITY_BINDING}: "true" (token audience '
                f"{audience!r}) but injected none of {', '.join(PROXY_ENV)}: it is older than v1.6.0 or has no custom "
                "token endpoint configured for identity bindings",
                "WebhookNotConfiguredForIdentityBinding",
                "on AKS, enable identity bindings on the cluster (the feature configures the webhook); elsewhere run "
                "azure-workload-identity v1.6.0 or later with --custom-token-endpoint-annotation-suffix="
                "identity-binding, --custom-token-endpoint-audience and the proxy's address, SNI name and CA",
            )
            return
        lacking = [name for name in (*INJECTED_ENV, *PROXY_ENV) if name not in env]
        if audience is None or audience == DEFAULT_AUDIENCE:
            lacking.append("a projected token for a custom audience (not api://AzureADTokenExchange)")
        if lacking:
            self.no_proxy_reason = "the webhook's injection is incomplete"
            self._webhook(tc.FAILED, f"the webhook injected a token proxy but the pod lacks {', '.join(lacking)}")
            return
        self.audience = self.expected["audience"] = audience
        ca_file_content = self._projected_ca(found)
        if ca_file_content is False:
            return
        names = ", ".join(found["injected"])
        self._webhook(tc.PASSED, f"the webhook injected {names} and a projected token for {audience!r}")
        if ca_file_content is not None or env.get(ENV_KUBERNETES_CA_DATA):
            self.proxy = TokenProxy(
                endpoint=env[ENV_KUBERNETES_TOKEN_PROXY],
                sni_name=env.get(ENV_KUBERNETES_SNI_NAME),
                ca_file_content=ca_file_content,
                ca_data=env.get(ENV_KUBERNETES_CA_DATA),
            )

    def _projected_ca(self, found: dict[str, t.Any]) -> str | t.Literal[False] | None:
        """The content of the CA file the pod would read; None when it cannot be read from here (the reason in
        no_proxy_reason); False when the pod could not start (the webhook step failed)."""
        namespace, path, source = self.params["namespace"], found["env"][ENV_KUBERNETES_CA_FILE], found["ca_source"]
        if source is None:
            self._webhook(tc.FAILED, f"{ENV_KUBERNETES_CA_FILE} is {path!r}, but no volume of the pod provides it")
            return False
        if source["kind"] != "configMap":
            self.no_proxy_reason = f"the CA is projected from a {source['kind']}, which this module does not read"
            return None
        try:
            configmap = ConfigMaps(self.kube.core_v1, calls=self.azure.calls, dry_run=False).read(
                namespace, source["name"]
            )
        except WorkloadIdentityError as exc:
            if exc.status not in (401, 403):
                raise
            self.no_proxy_reason = f"ConfigMap '{namespace}/{source['name']}' could not be read: {_short(exc)}"
            return None
        content = ((configmap or {}).get("data") or {}).get(source["key"])
        if content is None:
            what = "does not exist" if configmap is None else f"has no key {source['key']!r}"
            self._webhook(
                tc.FAILED,
                f"the webhook projects ConfigMap '{source['name']}' (key {source['key']!r}) as {path}, the token "
                f"proxy's CA, but in namespace '{namespace}' it {what}: the workload's pods cannot start (the "
                "volume is not optional)",
                "ConfigMapNotFound" if configmap is None else "ConfigMapKeyNotFound",
                "kube-controller-manager publishes kube-root-ca.crt (key ca.crt, the cluster's CA) in every "
                "namespace: check that it runs, or create the ConfigMap",
            )
            return False
        return str(content)

    def _webhook(self, status: str, reason: str, code: str | None = None, fix: str | None = None) -> None:
        self.webhook.update(status=status, reason=reason)
        if status == tc.FAILED:
            self.fail(
                tc.Diagnosis(
                    tc.WEBHOOK,
                    reason,
                    fix
                    or "check that the webhook's pods run (namespace azure-workload-identity-system or kube-system on "
                    f'AKS), that pods carry the label {LABEL_USE}: "{LABEL_USE_VALUE}" and that the ServiceAccount '
                    "is annotated",
                    code or "WebhookNotApplied",
                )
            )
        else:
            self.record(tc.WEBHOOK, status, reason)

    # -- result
    def result(self) -> dict[str, t.Any]:
        failure = self.failure
        credential = None
        compared = self.steps.get(tc.CREDENTIAL, {}).get("status") == tc.PASSED
        if self.check is not None and self.check.match is not None and compared:
            credential = {k: self.check.match.get(k) for k in ("name", "issuer", "subject", "audiences")}
        binding = None
        if self.binding is not None:
            binding = {k: self.binding.get(k) for k in ("name", "issuer_url", "provisioning_state")}
        return {
            "changed": False,
            "passed": failure is None,
            "federation": IDENTITY_BINDING if self.binding_mode else FEDERATED_CREDENTIAL,
            "binding": binding,
            "failed_step": failure.step if failure else None,
            "cause": tc.redact(failure.cause, [self.token]) if failure else None,
            "fix": failure.fix if failure else None,
            "error_code": failure.code if failure else None,
            "steps": [self.steps[name] for name in tc.STEPS if name in self.steps],
            "claims": tc.claims_view(self.claims) if self.claims is not None else None,
            "expected": dict(self.expected),
            "credential": credential,
            "webhook": dict(self.webhook),
            "access": dict(self.access),
            "attempts": self.attempts,
            "progress": list(self.progress.lines),
        }


def _access_error(exc: BaseException) -> tuple[str | None, str]:
    """(code, message) of a Key Vault or ARM refusal; Key Vault's own code is the innererror's (azure-behaviour §7)."""
    code, message, _status = azure_error_parts(exc)
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None) if error is not None else None
    if isinstance(inner, dict) and inner.get("code"):
        return inner["code"], message
    return code, message


def _tls_failure(exc: BaseException) -> bool:
    """Whether a connection failed in the TLS handshake (an answer of some server) rather than before it (no
    route, no name): azure-core wraps requests' and urllib3's SSLError, which wrap ssl's."""
    seen: set[int] = set()
    pending: list[t.Any] = [exc]
    while pending:
        error = pending.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, ssl.SSLError) or type(error).__name__ == "SSLError":
            return True
        pending += [getattr(error, "inner_exception", None), getattr(error, "reason", None)]
        pending += [error.__cause__, error.__context__, *error.args]
    return False


def proxy_injection(pod: dict[str, t.Any]) -> dict[str, t.Any]:
    """What the webhook injected into the first container of a pod annotated for an identity binding (v1.6.0's
    custom token endpoint, pkg/webhook/webhook.go; docs/lab.md §5): ``injected`` (the AZURE_* names), ``env`` (their
    values, paths inside the pod), ``audience`` (of the projected ServiceAccount token, None without one) and
    ``ca_source`` (what provides the file AZURE_KUBERNETES_CA_FILE names: ``{"kind": "configMap", "name", "key"}``,
    or the kind of another projected source, None when no volume does)."""
    spec = pod.get("spec") or {}
    container = (spec.get("containers") or [{}])[0]
    wanted = (*INJECTED_ENV, *PROXY_ENV, ENV_KUBERNETES_CA_DATA)
    env = {str(e.get("name")): str(e.get("value") or "") for e in container.get("env") or [] if e.get("name") in wanted}
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    audience, ca_source = None, None
    for volume in volumes.values():
        for source in (volume.get("projected") or {}).get("sources") or []:
            audience = audience or (source.get("serviceAccountToken") or {}).get("audience")
    ca_file = env.get(ENV_KUBERNETES_CA_FILE)
    for mount in container.get("volumeMounts") or []:
        root = str(mount.get("mountPath") or "").rstrip("/") + "/"
        if not ca_file or not ca_file.startswith(root):
            continue
        relative = ca_file[len(root) :]
        for source in ((volumes.get(mount.get("name")) or {}).get("projected") or {}).get("sources") or []:
            if source.get("configMap"):
                items = source["configMap"].get("items") or []
                key = next((i.get("key") for i in items if i.get("path") == relative), None)
                if key is None and not items:
                    key = relative  # without items every key is a file of its name
                if key is not None:
                    ca_source = {"kind": "configMap", "name": source["configMap"].get("name"), "key": key}
            elif source.get("clusterTrustBundle") and source["clusterTrustBundle"].get("path") == relative:
                ca_source = {"kind": "clusterTrustBundle"}
    return {
        "injected": [name for name in wanted if name in env],
        "env": env,
        "audience": audience,
        "ca_source": ca_source,
    }


def injected_settings(pod: dict[str, t.Any], audience: str) -> tuple[list[str], bool]:
    """The AZURE_* variables injected into the first container, and whether a projected token volume for
    ``audience`` was added (the webhook's mutation: azure-workload-identity pkg/webhook/webhook.go)."""
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or [{}]
    names = [str(e.get("name")) for e in containers[0].get("env") or [] if str(e.get("name")) in INJECTED_ENV]
    volume = any(
        (source.get("serviceAccountToken") or {}).get("audience") == audience
        for v in spec.get("volumes") or []
        for source in (v.get("projected") or {}).get("sources") or []
    )
    return names, volume
