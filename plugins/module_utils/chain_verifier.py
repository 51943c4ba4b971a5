# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The proof of one workload's trust chain, step by step, for aks.workload_identity.wid_verify.

ServiceAccount -> cluster issuer -> federated credentials compared with the claims -> a TokenRequest token ->
the exchange at Microsoft Entra ID (azure-identity's ClientAssertionCredential, as the workload's own SDK does)
-> access with the result (a Key Vault secret or an ARM resource) -> the webhook's dry run. The diagnosis of each
failure (cause, fix, code) and the propagation retries are trust_check's; this file does the requests.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import copy
import re
import time
import typing as t

from ansible_collections.aks.workload_identity.plugins.module_utils import trust_check as tc
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import (
    AzureError,
    AzureModule,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceManagementClient,
    assertion_credential,
    azure_error,
    azure_error_parts,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import WorkloadIdentityError
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.azure import (
    Clusters,
    FederatedCredentials,
    Identities,
    RoleAssignments,
    RoleDefinitions,
    cluster_target,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.gateways.kubernetes import (
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
    ENV_AUTHORITY_HOST,
    ENV_CLIENT_ID,
    ENV_FEDERATED_TOKEN_FILE,
    ENV_TENANT_ID,
    LABEL_USE,
    LABEL_USE_VALUE,
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
        }
        namespace, name = self.params["namespace"], self.params["service_account"]
        self.expected: dict[str, t.Any] = {
            "issuer": self.params["issuer_url"],
            "subject": service_account_subject(namespace, name),
            "audience": self.params["audience"],
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

    def request_token(self) -> None:
        if self.check_mode:
            self.skip(tc.TOKEN, "check mode: no token is requested (a TokenRequest is a write)")
            return
        if self.service_account is None:
            self.skip(tc.TOKEN, f"{self.target} does not exist")
            return
        namespace, name = self.params["namespace"], self.params["service_account"]
        try:
            token = ServiceAccounts(self.kube.core_v1, dry_run=False).request_token(
                namespace, name, self.params["audience"], self.params["token_expiration"]
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
        detail = f"token for audience {self.params['audience']!r} issued by {issuer!r}"
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
        self.check = tc.compare_credentials(
            self.identity["credentials"], issuer, subject, self.params["audience"], where
        )
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
            self.skip(tc.ACCESS, "check mode" if self.check_mode else "no access token")
            return
        if self.steps[tc.EXCHANGE]["status"] != tc.PASSED:
            self.skip(tc.ACCESS, "no access token")
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
            self._webhook(tc.SKIPPED, "webhook_dry_run is false")
            return
        if self.service_account is None:
            self._webhook(tc.SKIPPED, f"{self.target} does not exist")
            return
        namespace = self.params["namespace"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "wid-verify-", "labels": {LABEL_USE: LABEL_USE_VALUE}},
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
            if error.status == 403 and "admission webhook" not in str(error):
                self._webhook(tc.SKIPPED, f"pods cannot be created (dry run) in '{namespace}': {_short(error)}")
            else:
                self._webhook(tc.FAILED, f"the dry-run pod was refused: {_short(error)}", error.code)
            return
        injected, volume = injected_settings(document, self.params["audience"])
        self.webhook.update(injected_env=injected, token_volume=volume)
        if injected or volume:
            missing = [name for name in INJECTED_ENV if name not in injected]
            if missing or not volume:
                lacking = missing + ([] if volume else [f"a projected token volume for {self.params['audience']!r}"])
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

    def _webhook(self, status: str, reason: str, code: str | None = None) -> None:
        self.webhook.update(status=status, reason=reason)
        if status == tc.FAILED:
            self.fail(
                tc.Diagnosis(
                    tc.WEBHOOK,
                    reason,
                    "check that the webhook's pods run (namespace azure-workload-identity-system or kube-system on "
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
        return {
            "changed": False,
            "passed": failure is None,
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
