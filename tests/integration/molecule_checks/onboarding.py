"""Kubernetes side of the onboarding Molecule scenario: an application team's requests (annotations on its
ServiceAccounts), written and read back with the kubernetes client, never through the collection. Settings come
from the environment (K8S_AUTH_KUBECONFIG). Output is JSON on stdout.

  onboarding.py request NAMESPACE SERVICE_ACCOUNT ANNOTATIONS   creates the namespace and ServiceAccount when absent
                                                                and sets ANNOTATIONS (JSON; null removes a key)
  onboarding.py show NAMESPACE SERVICE_ACCOUNT                  its annotations and the Events about it
"""

from __future__ import annotations

import json
import os
import sys

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException


def core() -> k8s.CoreV1Api:
    return k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=os.environ.get("K8S_AUTH_KUBECONFIG")))


def request(api: k8s.CoreV1Api, namespace: str, name: str, annotations: dict) -> dict:
    changed = False
    try:
        api.create_namespace({"metadata": {"name": namespace}})
        changed = True
    except ApiException as exc:
        if exc.status != 409:
            raise
    try:
        current = api.read_namespaced_service_account(name, namespace).metadata.annotations or {}
    except ApiException as exc:
        if exc.status != 404:
            raise
        wanted = {k: v for k, v in annotations.items() if v is not None}
        api.create_namespaced_service_account(namespace, {"metadata": {"name": name, "annotations": wanted}})
        return {"changed": True}
    if any(current.get(k) != v for k, v in annotations.items()):
        api.patch_namespaced_service_account(name, namespace, {"metadata": {"annotations": annotations}})
        changed = True
    return {"changed": changed}


def show(api: k8s.CoreV1Api, namespace: str, name: str) -> dict:
    try:
        account = api.read_namespaced_service_account(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return {"exists": False, "annotations": {}, "events": []}
    events = api.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return {
        "exists": True,
        "annotations": account.metadata.annotations or {},
        "events": sorted(({"type": e.type, "reason": e.reason, "message": e.message} for e in events), key=str),
    }


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    api = core()
    if command == "request":
        result = request(api, args[0], args[1], json.loads(args[2]))
    elif command == "show":
        result = show(api, args[0], args[1])
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
