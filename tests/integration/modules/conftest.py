"""Fixtures the module tests share."""

from __future__ import annotations

import pytest
from azure.mgmt.msi import ManagedServiceIdentityClient
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.integration.runner import run_module
from tests.integration.sdk import sdk_client


@pytest.fixture(scope="module")
def cluster(lab) -> dict[str, str]:
    """The lab cluster with its OIDC issuer on (aks_oidc may write; the fleet modules only read it), as the
    options that name it."""
    enabled = run_module("aks_oidc", {"resource_group": lab.seed["resource_group"], "name": "aks-wid-lab"}, env=lab.env)
    assert not enabled.failed, enabled.result
    return {"cluster_resource_group": lab.seed["resource_group"], "cluster_name": "aks-wid-lab"}


@pytest.fixture(scope="module")
def core(lab) -> k8s.CoreV1Api:
    """A kubernetes client of the lab's admin, to check and plant state without the collection."""
    return k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig)))


@pytest.fixture(scope="module")
def msi(lab) -> ManagedServiceIdentityClient:
    """An MSI client of the test's own, to plant identities and credentials and to check what a module did."""
    return sdk_client(lab, ManagedServiceIdentityClient)
