"""Kubernetes objects for the audit scenario, made and removed with the kubernetes client, never through the
collection: what the collection's own modules refuse to write (a token expiration of 100 seconds) or cannot
write (Jobs, Pods, CustomResourceDefinitions and aad-pod-identity objects).

  audit_objects.py apply MANIFESTS    MANIFESTS: JSON list of objects; each is created, or when it exists, its
                                      labels and annotations are patched (ServiceAccounts) or it is kept
  audit_objects.py delete MANIFESTS   deletes each object named (apiVersion, kind, metadata.namespace/name)

Settings come from the environment (K8S_AUTH_KUBECONFIG). Output: JSON on stdout, what changed.
"""

from __future__ import annotations

import json
import os
import sys
import time

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

CRD_WAIT_SECONDS = 60
PLURALS = {"AzureIdentity": "azureidentities", "AzureIdentityBinding": "azureidentitybindings"}  # aad-pod-identity


def api_client() -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=os.environ.get("K8S_AUTH_KUBECONFIG"))


class Objects:
    def __init__(self, api: k8s.ApiClient) -> None:
        self.core, self.apps, self.batch = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.BatchV1Api(api)
        self.extensions, self.custom = k8s.ApiextensionsV1Api(api), k8s.CustomObjectsApi(api)

    def _typed(self, kind: str):
        return {
            "Namespace": (self.core, "namespace", False),
            "ServiceAccount": (self.core, "namespaced_service_account", True),
            "Pod": (self.core, "namespaced_pod", True),
            "Deployment": (self.apps, "namespaced_deployment", True),
            "Job": (self.batch, "namespaced_job", True),
            "CronJob": (self.batch, "namespaced_cron_job", True),
            "CustomResourceDefinition": (self.extensions, "custom_resource_definition", False),
        }.get(kind)

    def create(self, body: dict) -> None:
        typed = self._typed(body["kind"])
        namespace = body["metadata"].get("namespace")
        if typed is not None:
            api, suffix, namespaced = typed
            args = (namespace, body) if namespaced else (body,)
            getattr(api, f"create_{suffix}")(*args)
            return
        group, version = body["apiVersion"].split("/")
        plural = PLURALS[body["kind"]]
        deadline = time.monotonic() + CRD_WAIT_SECONDS
        while True:
            try:
                self.custom.create_namespaced_custom_object(group, version, namespace, plural, body)
                return
            except ApiException as exc:
                # 404 until the API server serves a CustomResourceDefinition created moments ago.
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def patch_metadata(self, body: dict) -> None:
        metadata = body["metadata"]
        patch = {"metadata": {key: metadata[key] for key in ("labels", "annotations") if key in metadata}}
        self.core.patch_namespaced_service_account(metadata["name"], metadata["namespace"], patch)

    def delete(self, body: dict) -> bool:
        metadata = body["metadata"]
        try:
            typed = self._typed(body["kind"])
            if typed is not None:
                api, suffix, namespaced = typed
                args = (metadata["name"], metadata["namespace"]) if namespaced else (metadata["name"],)
                getattr(api, f"delete_{suffix}")(*args, propagation_policy="Background")
            else:
                group, version = body["apiVersion"].split("/")
                self.custom.delete_namespaced_custom_object(
                    group, version, metadata["namespace"], PLURALS[body["kind"]], metadata["name"]
                )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


def apply(objects: Objects, manifests: list[dict]) -> dict:
    created, patched = [], []
    for body in manifests:
        name = f"{body['kind']}/{body['metadata'].get('namespace', '')}/{body['metadata']['name']}"
        try:
            objects.create(body)
            created.append(name)
        except ApiException as exc:
            if exc.status != 409:
                raise
            if body["kind"] == "ServiceAccount":
                objects.patch_metadata(body)
                patched.append(name)
    return {"created": created, "patched": patched}


def main(argv: list[str]) -> int:
    command, manifests = argv[0], json.loads(argv[1])
    with api_client() as api:
        objects = Objects(api)
        if command == "apply":
            output = apply(objects, manifests)
        elif command == "delete":
            output = {"deleted": [m["metadata"]["name"] for m in reversed(manifests) if objects.delete(m)]}
        else:
            raise SystemExit(f"unknown command {command!r}; see the module docstring")
    print(json.dumps(output, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
