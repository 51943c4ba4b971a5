"""Kubernetes-side helper of the Molecule scenarios: set up test workloads, read state back, prove the trust chain.

It talks to the API server with the kubernetes client and to Entra with azure-identity, never through the
collection, so a scenario's verify step checks what the roles did with independent means. Settings come from
the environment as AWX injects them (K8S_AUTH_KUBECONFIG, AZURE_*). Output is JSON on stdout.

  kube_workloads.py prepare NAMESPACE DEPLOYMENT CRONJOB   namespace + a Deployment and a CronJob without identity
  kube_workloads.py show REQUEST                           REQUEST: JSON {"service_accounts": [[ns, name]],
                                                           "configmaps": [[ns, name]], "workloads": [[kind, ns, name]],
                                                           "namespaces": [name]}
  kube_workloads.py exchange NAMESPACE SERVICE_ACCOUNT CLIENT_ID
                                                           a token of the ServiceAccount, exchanged at Entra for
                                                           the identity CLIENT_ID, as the webhook-mutated pod would
  kube_workloads.py delete REQUEST                         deletes what REQUEST names ("events_of": [namespace]:
                                                           all their Events); "finalize_namespaces":
                                                           [name] then finishes deleting those namespaces, as
                                                           the namespace controller (absent in the lab) would
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import tempfile
import urllib.request

from azure.core.exceptions import ClientAuthenticationError
from azure.identity import WorkloadIdentityCredential
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

AUDIENCE = "api://AzureADTokenExchange"
ARM_SCOPE = "https://management.core.windows.net/.default"


def api_client() -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=os.environ.get("K8S_AUTH_KUBECONFIG"))


def read_or_none(call, *args):
    try:
        return call(*args)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def create_or_keep(call, *args) -> None:
    try:
        call(*args)
    except ApiException as exc:
        if exc.status != 409:
            raise


# --- prepare --------------------------------------------------------------------------------------------------
def prepare(api: k8s.ApiClient, namespace: str, deployment: str, cronjob: str) -> dict:
    """Workloads as an application team would have them before workload identity: no label, default account."""
    core, apps, batch = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.BatchV1Api(api)
    create_or_keep(core.create_namespace, {"metadata": {"name": namespace}})
    container = {"name": "app", "image": "mcr.microsoft.com/azure-cli:latest", "command": ["sleep", "infinity"]}
    create_or_keep(
        apps.create_namespaced_deployment,
        namespace,
        {
            "metadata": {"name": deployment, "labels": {"app": deployment}},
            "spec": {
                "selector": {"matchLabels": {"app": deployment}},
                "template": {"metadata": {"labels": {"app": deployment}}, "spec": {"containers": [container]}},
            },
        },
    )
    create_or_keep(
        batch.create_namespaced_cron_job,
        namespace,
        {
            "metadata": {"name": cronjob},
            "spec": {
                "schedule": "0 3 * * *",
                "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}},
            },
        },
    )
    return {"namespace": namespace, "deployment": deployment, "cronjob": cronjob}


# --- show -----------------------------------------------------------------------------------------------------
def template_view(kind: str, workload) -> dict:
    template = workload.spec.job_template.spec.template if kind == "CronJob" else workload.spec.template
    return {
        "labels": workload.metadata.labels or {},
        "annotations": workload.metadata.annotations or {},
        "template_labels": template.metadata.labels or {} if template.metadata else {},
        "template_annotations": template.metadata.annotations or {} if template.metadata else {},
        "service_account_name": template.spec.service_account_name,
    }


def show(api: k8s.ApiClient, request: dict) -> dict:
    core, apps, batch = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.BatchV1Api(api)
    readers = {
        "Deployment": apps.read_namespaced_deployment,
        "StatefulSet": apps.read_namespaced_stateful_set,
        "DaemonSet": apps.read_namespaced_daemon_set,
        "CronJob": batch.read_namespaced_cron_job,
    }
    result: dict = {"service_accounts": {}, "configmaps": {}, "workloads": {}, "namespaces": {}}
    for name in request.get("namespaces", []):
        found = read_or_none(core.read_namespace, name)
        result["namespaces"][name] = (
            None
            if found is None
            else {
                "phase": found.status.phase,
                "terminating": found.metadata.deletion_timestamp is not None,
            }
        )
    for namespace, name in request.get("service_accounts", []):
        found = read_or_none(core.read_namespaced_service_account, name, namespace)
        result["service_accounts"][f"{namespace}/{name}"] = (
            None
            if found is None
            else {"labels": found.metadata.labels or {}, "annotations": found.metadata.annotations or {}}
        )
    for namespace, name in request.get("configmaps", []):
        found = read_or_none(core.read_namespaced_config_map, name, namespace)
        result["configmaps"][f"{namespace}/{name}"] = None if found is None else (found.data or {})
    for kind, namespace, name in request.get("workloads", []):
        found = read_or_none(readers[kind], name, namespace)
        result["workloads"][f"{kind}/{namespace}/{name}"] = None if found is None else template_view(kind, found)
    return result


# --- exchange -------------------------------------------------------------------------------------------------
def authority() -> dict:
    """The Entra authority of the cloud in AZURE_CLOUD_ENVIRONMENT when it is a metadata URL (the lab's)."""
    cloud = os.environ.get("AZURE_CLOUD_ENVIRONMENT", "")
    ca_bundle = os.environ.get("AZURE_CA_BUNDLE")
    if not cloud.startswith("https://"):
        return {}
    context = ssl.create_default_context(cafile=ca_bundle)
    with urllib.request.urlopen(cloud, context=context, timeout=30) as response:
        metadata = json.load(response)
    return {
        "authority": metadata["authentication"]["loginEndpoint"].rstrip("/"),
        "disable_instance_discovery": True,
        "connection_verify": ca_bundle,
    }


def exchange(api: k8s.ApiClient, namespace: str, service_account: str, client_id: str) -> dict:
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[AUDIENCE], expiration_seconds=600)
    )
    token = k8s.CoreV1Api(api).create_namespaced_service_account_token(service_account, namespace, request).status.token
    with tempfile.NamedTemporaryFile("w", suffix=".jwt") as token_file:
        token_file.write(token)
        token_file.flush()
        credential = WorkloadIdentityCredential(
            tenant_id=os.environ["AZURE_TENANT"], client_id=client_id, token_file_path=token_file.name, **authority()
        )
        try:
            access = credential.get_token(ARM_SCOPE)
        except ClientAuthenticationError as exc:
            return {"ok": False, "error": str(exc).splitlines()[0]}
    claims = json.loads(decode_segment(access.token.split(".")[1]))
    return {"ok": True, "appid": claims.get("appid"), "oid": claims.get("oid"), "tid": claims.get("tid")}


def decode_segment(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


# --- delete ---------------------------------------------------------------------------------------------------
def delete(api: k8s.ApiClient, request: dict) -> dict:
    core, apps, batch = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.BatchV1Api(api)
    deleters = {
        "Deployment": apps.delete_namespaced_deployment,
        "StatefulSet": apps.delete_namespaced_stateful_set,
        "DaemonSet": apps.delete_namespaced_daemon_set,
        "CronJob": batch.delete_namespaced_cron_job,
    }
    deleted = []
    targets = [(core.delete_namespaced_service_account, ns, name) for ns, name in request.get("service_accounts", [])]
    targets += [(core.delete_namespaced_config_map, ns, name) for ns, name in request.get("configmaps", [])]
    targets += [(deleters[kind], ns, name) for kind, ns, name in request.get("workloads", [])]
    for call, namespace, name in targets:
        if read_or_none(call, name, namespace) is not None:
            deleted.append(f"{namespace}/{name}")
    # Events outlive their namespace too without the namespace controller; a later run would read them back.
    for namespace in request.get("events_of", []):
        core.delete_collection_namespaced_event(namespace)
    # The lab runs no kube-controller-manager, so a deleted namespace stays Terminating for ever. Do the namespace
    # controller's last step once its contents are gone (deleted above): clear spec.finalizers through the
    # /finalize subresource, and the API server removes the namespace.
    for name in request.get("finalize_namespaces", []):
        found = read_or_none(core.read_namespace, name)
        if found is None:
            continue
        if found.metadata.deletion_timestamp is None:
            core.delete_namespace(name)
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "spec": {"finalizers": []}}
        core.replace_namespace_finalize(name, body)
        deleted.append(name)
    return {"deleted": deleted}


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    with api_client() as api:
        if command == "prepare":
            output = prepare(api, *args)
        elif command == "show":
            output = show(api, json.loads(args[0]))
        elif command == "exchange":
            output = exchange(api, *args)
        elif command == "delete":
            output = delete(api, json.loads(args[0]))
        else:
            raise SystemExit(f"unknown command {command!r}; see the module docstring")
    print(json.dumps(output, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
