"""The lab side of the tests that run the collection as an automation does (AWX jobs, the EDA rulebook): the
automation's RBAC applied from its shipped file, and the bearer token of its ServiceAccount - what an admin would
`kubectl apply` and `kubectl create token`."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import yaml


def apply_list(api_client: Any, path: Path) -> None:
    """The objects of a shipped RBAC file (one v1 List); those already there are kept."""
    from kubernetes.utils import FailToCreateError, create_from_dict

    for document in yaml.safe_load(path.read_text())["items"]:
        try:
            create_from_dict(api_client, document)
        except FailToCreateError as error:  # already there (a namespace two files declare, a second session)
            if any(failure.status != 409 for failure in error.api_exceptions):
                raise


def service_account_login(lab: Any, rbac: Path, namespace: str, name: str, cluster: str | None = None) -> dict:
    """``rbac`` applied as the lab's admin (of the first cluster, or of the one added as ``cluster``), then what a
    client of ServiceAccount ``namespace/name`` needs: the API server's URL, a one-hour token and the CA (PEM)."""
    from kubernetes import client, config

    kubeconfig = lab.kubeconfig(cluster)
    api_client = config.new_client_from_config(str(kubeconfig))
    apply_list(api_client, rbac)
    request = {"spec": {"expirationSeconds": 3600}}
    token = client.CoreV1Api(api_client).create_namespaced_service_account_token(name, namespace, request).status.token
    endpoint = json.loads(Path(kubeconfig).read_text())["clusters"][0]["cluster"]
    return {
        "host": endpoint["server"],
        "token": token,
        "ca_pem": base64.b64decode(endpoint["certificate-authority-data"]).decode(),
    }
