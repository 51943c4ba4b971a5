# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # Mirrors K8S_AUTH_ARGSPEC in plugins/module_utils/k8s_client.py (a unit test keeps them equal). The names and
    # environment variables are kubernetes.core's, so the same module_defaults and AWX credentials apply.
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path of a kubeconfig file, or the kubeconfig itself as a dictionary.
      - When neither this, O(context) nor O(host) with credentials is given, the module reads the files in
        E(KUBECONFIG), else the pod's in-cluster service account (when E(KUBERNETES_SERVICE_HOST) is set), else
        C(~/.kube/config).
      - Falls back to E(K8S_AUTH_KUBECONFIG).
    type: raw
  context:
    description:
      - The kubeconfig context to use; defaults to the kubeconfig's current context.
      - Falls back to E(K8S_AUTH_CONTEXT).
    type: str
  host:
    description:
      - URL of the Kubernetes API server. With O(api_key), or O(client_cert) and O(client_key), no kubeconfig is
        read at all; otherwise it overrides the server of the loaded configuration.
      - Falls back to E(K8S_AUTH_HOST).
    type: str
  api_key:
    description:
      - Bearer token to authenticate with, such as a ServiceAccount token.
      - Falls back to E(K8S_AUTH_API_KEY).
      - This value is never logged (C(no_log)) nor returned, also not inside error messages.
    type: str
  client_cert:
    description:
      - Path of a client certificate (PEM) to authenticate with.
      - Falls back to E(K8S_AUTH_CERT_FILE).
    type: path
    aliases: [cert_file]
  client_key:
    description:
      - Path of the private key (PEM) of O(client_cert).
      - Falls back to E(K8S_AUTH_KEY_FILE).
    type: path
    aliases: [key_file]
  ca_cert:
    description:
      - Path of the certificate authority (PEM) that signed the API server's certificate.
      - Falls back to E(K8S_AUTH_SSL_CA_CERT).
    type: path
    aliases: [ssl_ca_cert]
  validate_certs:
    description:
      - Whether to verify the API server's TLS certificate. When not set, the loaded configuration decides
        (verification is on unless the kubeconfig says C(insecure-skip-tls-verify)).
      - Falls back to E(K8S_AUTH_VERIFY_SSL).
    type: bool
    aliases: [verify_ssl]
requirements:
  - python >= 3.10
  - kubernetes
notes:
  - Each option is taken from the task first, then from its E(K8S_AUTH_*) environment variable (AWX's Kubernetes
    credential injects E(K8S_AUTH_HOST), E(K8S_AUTH_API_KEY), E(K8S_AUTH_VERIFY_SSL) and E(K8S_AUTH_SSL_CA_CERT)).
  - Unlike kubernetes.core, an explicit E(KUBECONFIG) wins over the in-cluster service account, so a job that runs
    in a pod reaches the cluster it was pointed at.
  - In check mode every write is sent to the API server as a server-side dry run (C(dryRun=All)), so admission
    and validation errors show in check mode too, and nothing is persisted.
  - Use C(module_defaults) with the C(group/aks.workload_identity.k8s) action group to set these options once.
"""
