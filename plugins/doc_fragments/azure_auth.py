# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # Mirrors AZURE_AUTH_ARGSPEC in plugins/module_utils/azure_client.py (a unit test keeps them equal).
    DOCUMENTATION = r"""
options:
  auth_source:
    description:
      - How the module authenticates to Azure.
      - V(auto) uses a service principal when O(secret) is set, else workload identity when
        O(federated_token_file) is set, else tries the managed identity and then the Azure CLI login, and
        fails listing what it tried.
      - V(env) uses only a service principal (O(client_id), O(secret), O(tenant)) or workload identity
        (O(client_id), O(tenant), O(federated_token_file)) from the options or their environment variables.
      - V(cli) uses the account the Azure CLI (C(az login)) is signed in with; O(subscription_id) defaults to
        the CLI's current subscription. The CLI reads its own cloud and CA settings.
      - V(msi) uses the host's managed identity, the user-assigned one O(client_id) when set.
      - V(workload_identity) exchanges the Kubernetes ServiceAccount token in O(federated_token_file) for
        O(client_id) in O(tenant), as a pod mutated by the workload identity webhook does.
      - Falls back to the E(ANSIBLE_AZURE_AUTH_SOURCE) environment variable.
    type: str
    choices: [auto, env, cli, msi, workload_identity]
    default: auto
  subscription_id:
    description:
      - The Azure subscription ID (a GUID).
      - Falls back to E(AZURE_SUBSCRIPTION_ID).
    type: str
  client_id:
    description:
      - Client (application) ID of the service principal, workload identity or user-assigned managed identity
        to authenticate as.
      - Falls back to E(AZURE_CLIENT_ID).
    type: str
  secret:
    description:
      - Client secret of the service principal O(client_id).
      - Falls back to E(AZURE_SECRET) (as AWX injects it), then E(AZURE_CLIENT_SECRET) (azure-identity's name).
      - This value is never logged (C(no_log)) nor returned, also not inside error messages.
    type: str
  tenant:
    description:
      - The Microsoft Entra tenant (directory) ID.
      - Falls back to E(AZURE_TENANT) (as AWX injects it), then E(AZURE_TENANT_ID) (azure-identity's name).
    type: str
  federated_token_file:
    description:
      - Path of the Kubernetes ServiceAccount token that workload identity exchanges for an Entra token.
      - Falls back to E(AZURE_FEDERATED_TOKEN_FILE), which the workload identity webhook sets in a mutated pod.
    type: path
  cloud_environment:
    description:
      - The Azure cloud, by name (V(AzureCloud), V(AzureUSGovernment), V(AzureChinaCloud)) or as the URL of an
        ARM metadata document such as
        V(https://management.azure.com/metadata/endpoints?api-version=2022-09-01), for Azure Stack, an
        air-gapped cloud or an emulator.
      - The resource manager endpoint, Entra authority, ARM token audience and Key Vault DNS suffix come from the
        named cloud or from the document; the document is fetched trusting O(ca_bundle) when it is set.
      - Falls back to E(AZURE_CLOUD_ENVIRONMENT).
    type: str
    default: AzureCloud
  authority_host:
    description:
      - The Microsoft Entra authority to request tokens from, for example V(https://login.microsoftonline.com).
      - Defaults to the authority of O(cloud_environment).
      - Falls back to E(AZURE_AUTHORITY_HOST), which the workload identity webhook sets in a mutated pod.
    type: str
  disable_instance_discovery:
    description:
      - Skip MSAL's instance discovery, the call that asks V(login.microsoftonline.com) whether the authority is
        a known Entra instance. Needed for authorities Microsoft does not know (Azure Stack, emulators).
      - When not set, it is V(true) if O(cloud_environment) is a metadata URL and V(false) for a named cloud.
    type: bool
  ca_bundle:
    description:
      - PEM file of the certificate authorities to trust for every HTTPS call (Entra, ARM, Key Vault, the cloud
        metadata document). When set, only these authorities are trusted.
      - Falls back to E(AZURE_CA_BUNDLE), then E(REQUESTS_CA_BUNDLE).
    type: path
  lro_polling_interval:
    description:
      - Seconds between two status checks of a long-running Azure operation when the service does not say
        (with C(Retry-After)) when to ask again. The Azure SDK's own default is 30.
    type: float
    default: 5.0
requirements:
  - python >= 3.10
  - azure-identity
  - the Azure SDK management package of the service a module manages (see the collection's requirements.txt)
notes:
  - Each option is taken from the task first, then from the first of its environment variables that is set, in the
    order listed (the names AWX's Microsoft Azure Resource Manager credential injects come before
    azure-identity's own names), then from its default.
  - With O(auth_source=auto) set O(secret) only for a service principal; a stray E(AZURE_SECRET) or
    E(AZURE_CLIENT_SECRET) in the environment selects the service principal.
  - Use C(module_defaults) with the C(group/aks.workload_identity.azure) action group to set these options once.
"""
