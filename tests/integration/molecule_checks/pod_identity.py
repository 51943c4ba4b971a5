"""aad-pod-identity side of the pod_identity_migration scenario, with the kubernetes client only (never the
collection): install the CRDs, plant what a cluster on aad-pod-identity has, read it back, delete it. Settings come
from the environment as AWX injects them (K8S_AUTH_KUBECONFIG). Output is JSON on stdout.

  pod_identity.py prepare NAMESPACE PREFIX RESOURCE_ID CLIENT_ID   the CRDs (tests/lab/kube/aad-pod-identity-crds.yaml,
                                                                   created when missing), the namespace, AzureIdentity
                                                                   PREFIX-id, AzureIdentityBinding PREFIX-binding
                                                                   (selector PREFIX), Deployments PREFIX-api (as
                                                                   ServiceAccount PREFIX-api-sa) and PREFIX-worker (as
                                                                   default), both labelled aadpodidbinding=PREFIX
  pod_identity.py show NAMESPACE                                   the namespace's AzureIdentity and binding names,
                                                                   Deployments, ServiceAccounts and every object's
                                                                   resourceVersion (to prove nothing changed)
  pod_identity.py delete NAMESPACE                                 deletes the Deployments, the ServiceAccounts other
                                                                   than default and the aad-pod-identity objects
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parents[3]
GROUP, VERSION = "aadpodidentity.k8s.io", "v1"
PLURALS = ("azureidentities", "azureidentitybindings")


def api_client() -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=os.environ.get("K8S_AUTH_KUBECONFIG"))


def create_or_keep(call, *args) -> bool:
    try:
        call(*args)
    except ApiException as exc:
        if exc.status != 409:
            raise
        return False
    return True


def deployment(name: str, selector: str, service_account: str | None) -> dict:
    spec: dict = {"containers": [{"name": "app", "image": "mcr.microsoft.com/azure-cli:latest"}]}
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name, "aadpodidbinding": selector}}, "spec": spec},
        },
    }


def prepare(api: k8s.ApiClient, namespace: str, prefix: str, resource_id: str, client_id: str) -> dict:
    sys.path.insert(0, str(REPO))
    from tests.lab.kube import crds  # the lab's own installer: creates what is missing, waits until Established

    crds.install(Path(os.environ["K8S_AUTH_KUBECONFIG"]))
    core, apps, objects = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.CustomObjectsApi(api)
    created = [create_or_keep(core.create_namespace, {"metadata": {"name": namespace}})]
    created.append(
        create_or_keep(core.create_namespaced_service_account, namespace, {"metadata": {"name": f"{prefix}-api-sa"}})
    )
    identity = {"type": 0, "resourceID": resource_id, "clientID": client_id}
    binding = {"azureIdentity": f"{prefix}-id", "selector": prefix}
    for plural, kind, name, spec in (
        ("azureidentities", "AzureIdentity", f"{prefix}-id", identity),
        ("azureidentitybindings", "AzureIdentityBinding", f"{prefix}-binding", binding),
    ):
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}
        created.append(create_or_keep(objects.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body))
    created.append(
        create_or_keep(
            apps.create_namespaced_deployment, namespace, deployment(f"{prefix}-api", prefix, f"{prefix}-api-sa")
        )
    )
    created.append(
        create_or_keep(apps.create_namespaced_deployment, namespace, deployment(f"{prefix}-worker", prefix, None))
    )
    return {"changed": any(created)}


def show(api: k8s.ApiClient, namespace: str) -> dict:
    core, apps, objects = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.CustomObjectsApi(api)
    found: dict = {"deployments": {}, "service_accounts": {}, "versions": {}}
    for plural in PLURALS:
        items = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
        found[plural] = sorted(item["metadata"]["name"] for item in items)
        found["versions"].update({f"{plural}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items})
    for item in apps.list_namespaced_deployment(namespace).items:
        template = item.spec.template
        found["deployments"][item.metadata.name] = {
            "service_account_name": template.spec.service_account_name,
            "template_labels": template.metadata.labels or {},
            "template_annotations": template.metadata.annotations or {},
        }
        found["versions"][f"deployments/{item.metadata.name}"] = item.metadata.resource_version
    for item in core.list_namespaced_service_account(namespace).items:
        found["service_accounts"][item.metadata.name] = item.metadata.annotations or {}
        found["versions"][f"serviceaccounts/{item.metadata.name}"] = item.metadata.resource_version
    return found


def delete(api: k8s.ApiClient, namespace: str) -> dict:
    core, apps, objects = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.CustomObjectsApi(api)
    deleted = []
    try:
        for item in apps.list_namespaced_deployment(namespace).items:
            apps.delete_namespaced_deployment(item.metadata.name, namespace)
            deleted.append(f"deployments/{item.metadata.name}")
        for item in core.list_namespaced_service_account(namespace).items:
            if item.metadata.name != "default":
                core.delete_namespaced_service_account(item.metadata.name, namespace)
                deleted.append(f"serviceaccounts/{item.metadata.name}")
        for plural in PLURALS:
            for item in objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]:
                objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, item["metadata"]["name"])
                deleted.append(f"{plural}/{item['metadata']['name']}")
    except ApiException as exc:
        if exc.status != 404:  # no namespace, or no CRDs: nothing to delete
            raise
    return {"deleted": deleted}


def main(argv: list[str]) -> int:
    command, *args = argv
    with api_client() as api:
        result = {"prepare": prepare, "show": show, "delete": delete}[command](api, *args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
