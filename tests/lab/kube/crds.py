"""CustomResourceDefinitions the lab installs on demand: AAD Pod Identity's (aad-pod-identity-crds.yaml).

``install(admin_kubeconfig)`` creates each definition that is missing and waits until the apiserver reports it
``Established`` (its REST endpoints are served from then on: "Create a CustomResourceDefinition" in
https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/). A definition that
exists already is left as it is, so calling it again writes nothing. docs/lab.md §9.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

POD_IDENTITY_CRDS = Path(__file__).resolve().parent / "aad-pod-identity-crds.yaml"
POD_IDENTITY_GROUP = "aadpodidentity.k8s.io"


def definitions(manifest: Path = POD_IDENTITY_CRDS) -> list[dict]:
    return list(
        yaml.safe_load(manifest.read_text())["items"]
    )  # one v1 List: ansible-test's yamllint wants one document


def _established(crd) -> bool:
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def install(admin_kubeconfig: Path, manifest: Path = POD_IDENTITY_CRDS, timeout: float = 60) -> list[str]:
    """Create the manifest's CRDs that are missing, wait until all are Established; returns their names."""
    from kubernetes import client, config

    wanted = definitions(manifest)
    names = [document["metadata"]["name"] for document in wanted]
    with config.new_client_from_config(config_file=str(admin_kubeconfig)) as api:
        extensions = client.ApiextensionsV1Api(api)
        present = {crd.metadata.name for crd in extensions.list_custom_resource_definition().items}
        for document in wanted:
            if document["metadata"]["name"] not in present:
                try:
                    extensions.create_custom_resource_definition(document)
                except client.ApiException as error:
                    if error.status != 409:  # another process created it in between: as good
                        raise
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            pending = [name for name in pending if not _established(extensions.read_custom_resource_definition(name))]
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"CRDs not Established after {timeout:.0f}s: {', '.join(pending)}")
            if pending:
                time.sleep(0.1)
    return names
