#!/usr/bin/python
# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: federated_credential
short_description: Federate a user-assigned managed identity with a Kubernetes ServiceAccount (or any OIDC subject)
version_added: 0.1.0
description:
  - Creates, updates or deletes a federated identity credential on a user-assigned managed identity, so that
    Microsoft Entra ID exchanges tokens issued by O(issuer) for O(subject) (with audience O(audiences)) for tokens
    of the identity. On AKS the issuer is the cluster's OIDC issuer URL and the subject names a ServiceAccount.
  - Azure identifies a credential by its issuer and subject, which must be unique per identity; the name is only a
    label. When the identity already has a credential with the issuer and subject under another name, the module
    uses that one (no write, a warning naming it) instead of failing on Azure's "Issuer and subject combination
    already exists".
  - When a credential with O(name) exists with another issuer or subject, it is updated in place.
  - Entra compares issuer and subject exactly. A credential whose issuer differs from the requested one only by a
    trailing slash, or whose subject differs only in letter case, is reported in a warning, as this is the most
    common cause of AADSTS70021 (No matching federated identity record found).
  - Every rule Azure applies is checked before anything is sent (name pattern, https issuer, exactly one audience,
    600 characters at most), and so is the limit of 20 credentials per identity, reporting how many are used.
  - One list of the identity's credentials serves every decision. A run that changes nothing makes that one Azure
    Resource Manager request (plus one per further page, should Azure page an identity's at most 20 credentials).
    Creating or updating adds one PUT, deleting one DELETE. There is no separate read of the identity; the list
    answers 404 when the identity is missing. The module then reads the resource group (one GET) to say which of
    O(resource_group) and O(identity_name) is wrong, and fails without writing anything; in check mode it warns
    instead, as an earlier task of the play may create the identity.
  - Writes are retried, with jittered backoff, for at most O(retry_timeout) seconds when Azure answers
    409 C(ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity) (Azure refuses parallel
    credential writes on one identity) or, for an identity the list has just shown to exist, 404 "The parent
    user-assigned identity doesn't exist" (an identity created moments ago that Azure does not see everywhere
    yet). Throttling (429, honouring C(Retry-After)) and 5xx answers are retried by the Azure SDK itself.
requirements:
  - azure-mgmt-msi >= 7.0.0
extends_documentation_fragment:
  - aks.workload_identity.azure_auth
attributes:
  check_mode:
    support: full
    description: Reports what would change, with the same single list request as a real run and no write.
  diff_mode:
    support: full
    description: Shows the credential before and after, as the RV(federated_credential) dictionary.
  idempotent:
    support: full
    description: A second run with the same options reports no change and makes one list request.
options:
  resource_group:
    description:
      - Resource group of the managed identity, 1 to 90 letters, digits, underscores, hyphens, periods or
        parentheses, not ending with a period.
    type: str
    required: true
  identity_name:
    description:
      - Name of the user-assigned managed identity the credential belongs to, 3 to 128 letters, digits, V(-) or
        V(_), starting with a letter or digit.
    type: str
    required: true
  name:
    description:
      - Name of the federated credential, 3 to 120 letters, digits, C(-) or C(_), starting with a letter or digit.
        Azure does not allow renaming a credential.
      - With O(state=present), defaults to a name made from the issuer, namespace and ServiceAccount name with a
        short hash (C(issuer-<namespace>-<service account>-<hash>)), stable across runs. The default needs a
        ServiceAccount subject; set O(name) for any other subject.
      - With O(state=absent), when not set, the credential with O(issuer) and O(subject) is deleted, whatever its
        name; when set, the credential of that name is deleted, whatever its issuer and subject.
    type: str
  issuer:
    description:
      - The OIDC issuer URL of the tokens to trust, exactly as in their C(iss) claim; on AKS the cluster's OIDC
        issuer URL, which ends with a slash (see M(aks.workload_identity.aks_oidc)).
      - Must be an https URL of at most 600 characters, with a host name and no query, fragment, user name or
        password (OpenID Connect Discovery).
      - Required with O(state=present).
    type: str
  subject:
    description:
      - The subject of the tokens to trust, exactly as in their C(sub) claim (case-sensitive), at most 600
        characters. For a Kubernetes ServiceAccount it is C(system:serviceaccount:<namespace>:<name>); set
        O(namespace) and O(service_account) instead to have it built.
      - A subject starting with C(system:serviceaccount), in any letter case, must be exactly
        C(system:serviceaccount:<namespace>:<name>) with a namespace that is an RFC 1123 label and a name that is an
        RFC 1123 subdomain (lower case), as Kubernetes writes it in its tokens; anything else could never match a
        token and is refused before any request. Subjects of other issuers (such as GitHub Actions') need O(name).
      - With O(state=present), O(subject) or O(namespace) and O(service_account) are required.
    type: str
  namespace:
    description:
      - Namespace of the Kubernetes ServiceAccount whose tokens to trust, an RFC 1123 label (at most 63 lower-case
        letters, digits and V(-), starting and ending alphanumeric). Requires O(service_account).
    type: str
  service_account:
    description:
      - Name of the Kubernetes ServiceAccount whose tokens to trust, an RFC 1123 subdomain (at most 253 lower-case
        letters, digits, V(-) and V(.)). Requires O(namespace).
    type: str
  audiences:
    description:
      - The audience of the tokens to trust. Azure requires exactly one, of at most 600 characters.
      - The workload identity webhook requests tokens for V(api://AzureADTokenExchange).
    type: list
    elements: str
    default: [api://AzureADTokenExchange]
  retry_timeout:
    description:
      - Most seconds to spend retrying a write Azure refuses for a passing reason (see the description), 0 (no
        retry) to 86400.
      - A misspelt O(identity_name) is not retried; the list of credentials already shows it missing.
    type: float
    default: 60
  state:
    description:
      - V(present) creates or updates the credential; V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
notes:
  - After a credential is created, Entra may refuse token exchanges for it for a few minutes (AADSTS70021 while the
    credential propagates). M(aks.workload_identity.wid_verify) retries for that.
seealso:
  - module: aks.workload_identity.managed_identity
    description: Create the identity first.
  - module: aks.workload_identity.aks_oidc
    description: Enable the cluster's OIDC issuer and get its URL.
  - module: aks.workload_identity.wid_service_account
    description: Annotate the ServiceAccount with the identity's client ID.
  - name: Federated identity credential considerations
    description: Microsoft's rules and limits for federated identity credentials.
    link: https://learn.microsoft.com/entra/workload-id/workload-identity-federation-considerations
author:
  - Contributors to the aks.workload_identity collection (!UNKNOWN)
"""

EXAMPLES = r"""
---
- name: Trust the ServiceAccount orders/orders-api of the cluster
  aks.workload_identity.federated_credential:
    resource_group: rg-apps
    identity_name: id-orders
    issuer: "{{ oidc.issuer_url }}"
    namespace: orders
    service_account: orders-api
  register: credential

- name: Same, with an explicit name and subject
  aks.workload_identity.federated_credential:
    resource_group: rg-apps
    identity_name: id-orders
    name: aks-prod-orders-api
    issuer: https://westeurope.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/
    subject: system:serviceaccount:orders:orders-api

- name: Point the credential at another cluster (updates it in place)
  aks.workload_identity.federated_credential:
    resource_group: rg-apps
    identity_name: id-orders
    name: aks-prod-orders-api
    issuer: "{{ new_cluster_oidc.issuer_url }}"
    subject: system:serviceaccount:orders:orders-api

- name: Check what would be deleted, without deleting
  aks.workload_identity.federated_credential:
    resource_group: rg-apps
    identity_name: id-orders
    issuer: "{{ oidc.issuer_url }}"
    namespace: orders
    service_account: orders-api
    state: absent
  check_mode: true
  diff: true

- name: Delete the credential by name
  aks.workload_identity.federated_credential:
    resource_group: rg-apps
    identity_name: id-orders
    name: aks-prod-orders-api
    state: absent
"""

RETURN = r"""
federated_credential:
  description:
    - The credential after the run; empty when O(state=absent).
    - When the issuer and subject already existed under another name, that credential.
  returned: always
  type: dict
  contains:
    id:
      description: Azure resource ID of the credential (predicted in check mode when it would be created).
      type: str
      sample: "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg-apps/providers/\
        Microsoft.ManagedIdentity/userAssignedIdentities/id-orders/federatedIdentityCredentials/aks-prod-orders-api"
    name:
      description: Name of the credential.
      type: str
      sample: aks-prod-orders-api
    issuer:
      description: The trusted issuer.
      type: str
      sample: https://westeurope.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/
    subject:
      description: The trusted subject.
      type: str
      sample: system:serviceaccount:orders:orders-api
    audiences:
      description: The trusted audience (one).
      type: list
      elements: str
      sample: [api://AzureADTokenExchange]
credential_count:
  description:
    - How many federated credentials the identity has after the run (in check mode, would have). Azure allows 20.
  returned: always
  type: int
  sample: 3
action:
  description:
    - What the module did, or would do in check mode. V(adopt) means a credential with the issuer and subject
      already existed under another name and was used as it is.
  returned: always
  type: str
  choices: [create, update, delete, none, adopt]
  sample: create
diff:
  description: The credential before and after the run (an empty dictionary for an absent credential).
  returned: always
  type: dict
  contains:
    before:
      description: The credential before the run.
      type: dict
    after:
      description: The credential after the run.
      type: dict
"""

from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import (
    AzureModule,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.errors import (
    WorkloadIdentityError,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.reconcile.federated_credential import (
    DEFAULT_RETRY_TIMEOUT,
    DesiredCredential,
    desired_subject,
    reconcile,
    validate,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.workload_identity import (
    DEFAULT_AUDIENCE,
    validate_identity_name,
    validate_resource_group_name,
    validate_wait_timeout,
)

ARGUMENT_SPEC = {
    "resource_group": {"type": "str", "required": True},
    "identity_name": {"type": "str", "required": True},
    "name": {"type": "str"},
    "issuer": {"type": "str"},
    "subject": {"type": "str"},
    "namespace": {"type": "str"},
    "service_account": {"type": "str"},
    "audiences": {"type": "list", "elements": "str", "default": [DEFAULT_AUDIENCE]},
    "retry_timeout": {"type": "float", "default": DEFAULT_RETRY_TIMEOUT},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
}
MODULE_KWARGS = {
    "mutually_exclusive": [("subject", "namespace"), ("subject", "service_account")],
    "required_together": [("namespace", "service_account")],
    "required_if": [("state", "present", ("issuer",)), ("state", "present", ("subject", "namespace"), True)],
}


def check_input(params: dict) -> list[str]:
    """Every "option: rule" problem at once, before any request."""
    errors = [
        *validate_resource_group_name(params["resource_group"]),
        *validate_identity_name(params["identity_name"], "identity_name"),
        *validate_wait_timeout(params["retry_timeout"], "retry_timeout", low=0),
    ]
    _subject, subject_errors = desired_subject(params["subject"], params["namespace"], params["service_account"])
    return errors + (subject_errors or validate(desired_credential(params)))


def desired_credential(params: dict) -> DesiredCredential:
    subject, _errors = desired_subject(params["subject"], params["namespace"], params["service_account"])
    return DesiredCredential(
        resource_group=params["resource_group"],
        identity_name=params["identity_name"],
        name=params["name"],
        issuer=params["issuer"],
        subject=subject,
        audiences=tuple(params["audiences"]),
        state=params["state"],
    )


def main() -> None:
    azure = AzureModule(ARGUMENT_SPEC, supports_check_mode=True, **MODULE_KWARGS)
    errors = check_input(azure.params)
    if errors:
        azure.module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors, error_code="InvalidParameter")
    try:
        outcome = reconcile(azure, desired_credential(azure.params), timeout=azure.params["retry_timeout"])
    except WorkloadIdentityError as exc:
        azure.fail(exc)
    for warning in outcome.plan.warnings:
        azure.warn(warning)
    azure.exit_json(
        changed=outcome.plan.changed,
        federated_credential=outcome.credential or {},
        credential_count=outcome.credential_count,
        action=outcome.plan.action,
        diff=outcome.plan.diff(),
    )


if __name__ == "__main__":
    main()
