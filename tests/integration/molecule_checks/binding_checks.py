"""Identity-binding side of the Molecule scenarios: ask the API server who may use an identity, and prove a bound
ServiceAccount's chain through the AKS token proxy as its pod would, with the webhook's own injection and
azure-identity's own proxy support. It never goes through the collection. Settings come from the environment
(K8S_AUTH_KUBECONFIG, AZURE_*, the lab's LAB_* settings). Output is JSON on stdout; no token is ever printed.

  binding_checks.py publish-root-ca NAMESPACE...        the ConfigMap kube-root-ca.crt in each namespace, as
                                                        kube-controller-manager would (the lab runs none)
  binding_checks.py access CLIENT_ID REQUEST            REQUEST: JSON [[namespace, service account], ...]; a
                                                        SubjectAccessReview each: {"ns/sa": allowed}
  binding_checks.py rbac-left NAMESPACE...              ClusterRoleBindings that still name a ServiceAccount of
                                                        these namespaces as a subject of a role granting the
                                                        identity-binding verb: {"left": [names]}
  binding_checks.py proxy-exchange NAMESPACE SERVICE_ACCOUNT [VAULT_URL SECRET_NAME]
                                                        the webhook's dry run of a bound pod, its projected volume
                                                        written as the kubelet would, then the pod's credential
                                                        (enable_azure_proxy=True) and, when named, a secret read
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
from pathlib import Path

from azure.core.exceptions import AzureError
from azure.identity import WorkloadIdentityCredential
from kubernetes import client as k8s
from kubernetes import config as k8s_config

USE_LABEL = "azure.workload.identity/use"
USE_BINDING = "azure.workload.identity/use-identity-binding"
RBAC_GROUP, RBAC_VERB = "cid.wi.aks.azure.com", "use-managed-identity"
ROOT_CA = "kube-root-ca.crt"
ARM_SCOPE = "https://management.core.windows.net/.default"
PROXY_SETTINGS = ("AZURE_KUBERNETES_TOKEN_PROXY", "AZURE_KUBERNETES_SNI_NAME", "AZURE_KUBERNETES_CA_FILE")


def api_client() -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=os.environ.get("K8S_AUTH_KUBECONFIG"))


def publish_root_ca(api: k8s.ApiClient, namespaces: list[str]) -> dict:
    core = k8s.CoreV1Api(api)
    body = {"metadata": {"name": ROOT_CA}, "data": {"ca.crt": Path(os.environ["LAB_TOKEN_PROXY_CA_FILE"]).read_text()}}
    published = []
    for namespace in namespaces:
        try:
            core.create_namespaced_config_map(namespace, body)
            published.append(namespace)
        except k8s.ApiException as error:
            if error.status != 409:
                raise
    return {"published": published}


def access(api: k8s.ApiClient, client_id: str, accounts: list[list[str]]) -> dict:
    authorization = k8s.AuthorizationV1Api(api)
    answers = {}
    for namespace, name in accounts:
        review = {
            "spec": {
                "user": f"system:serviceaccount:{namespace}:{name}",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
                "resourceAttributes": {"group": RBAC_GROUP, "resource": client_id, "verb": RBAC_VERB},
            }
        }
        answers[f"{namespace}/{name}"] = bool(authorization.create_subject_access_review(review).status.allowed)
    return answers


def rbac_left(api: k8s.ApiClient, namespaces: list[str]) -> dict:
    rbac = k8s.RbacAuthorizationV1Api(api)
    granting = {
        role.metadata.name
        for role in rbac.list_cluster_role().items
        if any(RBAC_GROUP in (rule.api_groups or []) and RBAC_VERB in (rule.verbs or []) for rule in role.rules or [])
    }
    left = [
        binding.metadata.name
        for binding in rbac.list_cluster_role_binding().items
        if binding.role_ref.name in granting
        and any(s.kind == "ServiceAccount" and s.namespace in namespaces for s in binding.subjects or [])
    ]
    return {"left": sorted(left)}


def mounted_pod_environment(api: k8s.ApiClient, namespace: str, account: str, root: Path) -> tuple[dict, list]:
    """The webhook's dry run of a bound pod; its projected volume written under ``root`` as the kubelet would (a
    TokenRequest per token source, the ConfigMap's keys); the container's environment with paths moved there."""
    core = k8s.CoreV1Api(api)
    pod = {
        "metadata": {"name": "binding-check", "labels": {USE_LABEL: "true"}, "annotations": {USE_BINDING: "true"}},
        "spec": {"serviceAccountName": account, "containers": [{"name": "app", "image": "busybox"}]},
    }
    mutated = core.create_namespaced_pod(namespace, pod, dry_run="All")
    container = mutated.spec.containers[0]
    env = {item.name: item.value for item in container.env or []}
    mount = next(
        m
        for m in container.volume_mounts or []
        if m.mount_path and env.get("AZURE_FEDERATED_TOKEN_FILE", "").startswith(m.mount_path)
    )
    volume = next(v for v in mutated.spec.volumes if v.name == mount.name)
    audiences = []
    for source in volume.projected.sources:
        if source.service_account_token:
            projected = source.service_account_token
            audiences.append(projected.audience)
            request = {"spec": {"audiences": [projected.audience], "expirationSeconds": projected.expiration_seconds}}
            token = core.create_namespaced_service_account_token(account, namespace, request).status.token
            (root / projected.path).parent.mkdir(parents=True, exist_ok=True)
            (root / projected.path).write_text(token)
        if source.config_map:
            data = core.read_namespaced_config_map(source.config_map.name, namespace).data
            for item in source.config_map.items:
                (root / item.path).parent.mkdir(parents=True, exist_ok=True)
                (root / item.path).write_text(data[item.key])
    moved = {
        k: v.replace(mount.mount_path, str(root), 1) if v.startswith(mount.mount_path) else v for k, v in env.items()
    }
    return moved, audiences


def proxy_exchange(api: k8s.ApiClient, namespace: str, account: str, vault_url: str = "", secret: str = "") -> dict:
    with tempfile.TemporaryDirectory(prefix="binding-check-") as tmp:
        env, audiences = mounted_pod_environment(api, namespace, account, Path(tmp))
        result = {"injected": sorted(k for k in PROXY_SETTINGS if k in env), "audiences": audiences}
        # The pod's code sees its own environment only.
        for name in [*PROXY_SETTINGS, "AZURE_KUBERNETES_CA_DATA", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"]:
            os.environ.pop(name, None)
        os.environ.update(env)
        credential = WorkloadIdentityCredential(
            tenant_id=env["AZURE_TENANT_ID"],
            client_id=env["AZURE_CLIENT_ID"],
            token_file_path=env["AZURE_FEDERATED_TOKEN_FILE"],
            enable_azure_proxy=True,
        )
        try:
            token = credential.get_token(ARM_SCOPE).token
            claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=" * (-len(token.split(".")[1]) % 4)))
            result.update(ok=True, appid=claims.get("appid"), tid=claims.get("tid"))
            if vault_url:
                from azure.keyvault.secrets import SecretClient

                vault = SecretClient(vault_url, credential, connection_verify=os.environ.get("AZURE_CA_BUNDLE"))
                result["secret_read"] = vault.get_secret(secret).value is not None  # the value is never printed
        except AzureError as exc:
            result.update(ok=False, error=str(exc).splitlines()[0])
    return result


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    with api_client() as api:
        if command == "publish-root-ca":
            output = publish_root_ca(api, args)
        elif command == "access":
            output = access(api, args[0], json.loads(args[1]))
        elif command == "rbac-left":
            output = rbac_left(api, args)
        elif command == "proxy-exchange":
            output = proxy_exchange(api, *args)
        else:
            raise SystemExit(f"unknown command {command!r}; see the module docstring")
    print(json.dumps(output, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
