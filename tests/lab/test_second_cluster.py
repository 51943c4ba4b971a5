"""A second cluster on demand (docs/lab.md §8): its own real kube-apiserver, etcd, cluster CA, service-account key
and AKS-shaped issuer, registered at the emulator as the AKS cluster <seed cluster>-green and wired like the first.

What a blue/green issuer rotation needs from the lab, proven through unmodified clients (kubernetes, azure-identity,
azure-mgmt-*): a token the second apiserver signs is exchanged at the emulated Entra ID only for an identity whose
federated credential trusts the second issuer; a credential trusting the first issuer gets Entra's AADSTS700211, and
the other way round; the first cluster keeps working; the second cluster's audit log tells writes from dry runs.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.lab import lab as lab_module
from tests.lab.kube import controlplane
from tests.lab.test_trust_chain import AUDIENCE, World

pytestmark = pytest.mark.lab

GREEN = "green"
DEMO_RG, DEMO_CLUSTER = "rg-wid-demo", "aks-wid-demo"  # wired to the lab's first kube-apiserver (tests/lab/lab.py)


@pytest.fixture(scope="module")
def world(lab):
    return World(lab)


@pytest.fixture(scope="module")
def green(lab):
    """The second cluster; removed again afterwards unless it ran before this module (someone else's then)."""
    existed = GREEN in lab_module.Lab.load(lab.workdir).clusters
    info = lab.add_cluster(GREEN)
    try:
        yield info
    finally:
        if not existed:
            lab.remove_cluster(GREEN)


@pytest.fixture(scope="module")
def green_core(green):
    return k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=green["admin_kubeconfig"]))


@pytest.fixture(scope="module")
def blue_issuer(world):
    """The first cluster's issuer, published: the demo cluster (wired to the first apiserver) with the issuer on, as
    tests/lab/test_trust_chain.py makes it. Left in place if it was there already."""
    existed = any(c.name == DEMO_CLUSTER for c in world.aks.managed_clusters.list())
    world.lab.settings(lro_seconds=0.5)
    world.resources.resource_groups.create_or_update(DEMO_RG, {"location": "eastus"})
    cluster = world.aks.managed_clusters.begin_create_or_update(
        DEMO_RG,
        DEMO_CLUSTER,
        {
            "location": "eastus",
            "identity": {"type": "SystemAssigned"},
            "properties": {
                "dnsPrefix": DEMO_CLUSTER,
                "agentPoolProfiles": [{"name": "nodepool1", "count": 1, "vmSize": "Standard_DS2_v2", "mode": "System"}],
                "oidcIssuerProfile": {"enabled": True},
                "securityProfile": {"workloadIdentity": {"enabled": True}},
            },
        },
        polling_interval=0.2,
    ).result()
    try:
        yield cluster.oidc_issuer_profile.issuer_url
    finally:
        if not existed:
            world.resources.resource_groups.begin_delete(DEMO_RG, polling_interval=0.2).result()
        world.lab.settings(lro_seconds=2)


def _service_account(core: k8s.CoreV1Api) -> tuple[str, str]:
    namespace, name = f"rot-{uuid.uuid4().hex[:8]}", "workload"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name)))
    return namespace, name


def _token(core: k8s.CoreV1Api, namespace: str, name: str) -> str:
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[AUDIENCE], expiration_seconds=600)
    )
    return core.create_namespaced_service_account_token(name, namespace, request).status.token


def _identity(world: World):
    return world.msi.user_assigned_identities.create_or_update(
        DEMO_RG, f"id-rot-{uuid.uuid4().hex[:8]}", {"location": "eastus"}
    )


def _federate(world: World, identity, issuer: str, subject: str, name: str) -> None:
    world.msi.federated_identity_credentials.create_or_update(
        DEMO_RG, identity.name, name, {"properties": {"issuer": issuer, "subject": subject, "audiences": [AUDIENCE]}}
    )


# ------------------------------------------------------------------------------------------------ the cluster


def test_second_cluster_is_a_control_plane_of_its_own(lab, green, green_core, world):
    assert green["url"] != lab.kube_url
    assert Path(green["workdir"]).parent == lab.workdir / "clusters" / GREEN
    assert controlplane.running(Path(green["workdir"]))
    assert green_core.api_client.configuration.host == green["url"]
    assert k8s.VersionApi(green_core.api_client).get_code().git_version == world.version.get_code().git_version
    # Its issuer: AKS's path shape on the emulator, a new GUID, not the first apiserver's.
    first_issuer = lab.state()["config"]["kube_issuer_url"]
    assert re.fullmatch(re.escape(f"{lab.emulator_url}/{world.tenant}/") + r"[0-9a-f-]{36}/", green["issuer"])
    assert green["issuer"] != first_issuer
    # Its own service-account signing key...
    green_keys = requests.get(green["url"] + "/openid/v1/jwks", verify=green["ca_file"], timeout=30).json()["keys"]
    first_keys = requests.get(lab.kube_url + "/openid/v1/jwks", verify=str(lab.ca_file), timeout=30).json()["keys"]
    assert {k["kid"] for k in green_keys}.isdisjoint(k["kid"] for k in first_keys)
    # ...and its own cluster CA: the first cluster's admin certificate is nobody there.
    first_admin = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(lab.admin_kubeconfig), client_configuration=first_admin)
    first_admin.host, first_admin.ssl_ca_cert = green["url"], green["ca_file"]
    with pytest.raises(k8s.ApiException) as refused:
        k8s.CoreV1Api(k8s.ApiClient(first_admin)).list_namespace()
    assert refused.value.status == 401


def test_add_cluster_is_idempotent(lab, green):
    pid_file = Path(green["workdir"]) / "kube-testenv.pid"
    pid = pid_file.read_text() if pid_file.exists() else None
    again = lab.add_cluster(GREEN)
    assert again == green
    assert (pid_file.read_text() if pid_file.exists() else None) == pid
    assert lab.clusters[GREEN] == green


def test_settings_reach_later_processes(lab, green):
    env = dict(line.split("=", 1) for line in (lab.workdir / "lab.env").read_text().splitlines() if "=" in line)
    assert env["LAB_CLUSTER_GREEN_KUBECONFIG"] == f'"{green["admin_kubeconfig"]}"'
    assert env["LAB_CLUSTER_GREEN_ISSUER"] == f'"{green["issuer"]}"'
    assert env["LAB_CLUSTER_GREEN_NAME"] == f'"{green["cluster"]}"'
    assert env["LAB_CLUSTER_GREEN_RESOURCE_GROUP"] == f'"{green["resource_group"]}"'
    assert lab.env["LAB_CLUSTER_GREEN_ISSUER"] == green["issuer"]
    assert lab_module.Lab.load(lab.workdir).clusters[GREEN]["issuer"] == green["issuer"]


def test_second_cluster_is_an_aks_cluster_publishing_its_apiservers_keys(world, green):
    cluster = world.aks.managed_clusters.get(green["resource_group"], green["cluster"])
    assert cluster.name == f"{world.lab.seed['cluster']}-{GREEN}"
    assert cluster.provisioning_state == "Succeeded"
    assert cluster.oidc_issuer_profile.enabled is True
    assert cluster.oidc_issuer_profile.issuer_url == green["issuer"]
    assert cluster.security_profile.workload_identity.enabled is True
    discovery = requests.get(green["issuer"] + ".well-known/openid-configuration", verify=world.ca, timeout=30).json()
    assert discovery["issuer"] == green["issuer"]
    published = requests.get(discovery["jwks_uri"], verify=world.ca, timeout=30).json()["keys"]
    served = requests.get(green["url"] + "/openid/v1/jwks", verify=green["ca_file"], timeout=30).json()["keys"]
    assert published and published == served


# ------------------------------------------------------------------------------------------------ the trust chains


def test_second_clusters_token_needs_a_credential_trusting_the_second_issuer(
    world, green, green_core, blue_issuer, tmp_path
):
    namespace, name = _service_account(green_core)
    subject = f"system:serviceaccount:{namespace}:{name}"
    token = _token(green_core, namespace, name)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == green["issuer"] and claims["sub"] == subject and claims["aud"] == [AUDIENCE]
    identity = _identity(world)
    # Blue's credential only (same subject): Entra finds no credential for the presented issuer.
    _federate(world, identity, blue_issuer, subject, "blue")
    with pytest.raises(ClientAuthenticationError, match="AADSTS700211") as refused:
        world.exchange(identity.client_id, token, tmp_path)
    assert green["issuer"] in str(refused.value)
    # Green's credential beside blue's: the exchange succeeds, for that identity.
    _federate(world, identity, green["issuer"], subject, "green")
    _credential, access = world.exchange(identity.client_id, token, tmp_path)
    granted = jwt.decode(access.token, options={"verify_signature": False})
    assert granted["oid"] == identity.principal_id and granted["appid"] == identity.client_id


def test_first_cluster_still_works_and_is_not_trusted_by_the_second_issuer(
    world, green, green_core, blue_issuer, tmp_path
):
    namespace, name = _service_account(world.core)  # the same namespace/name on both clusters: the same subject
    green_core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    green_core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name)))
    subject = f"system:serviceaccount:{namespace}:{name}"
    blue_token, green_token = _token(world.core, namespace, name), _token(green_core, namespace, name)
    assert jwt.decode(blue_token, options={"verify_signature": False})["iss"] == blue_issuer
    identity = _identity(world)
    _federate(world, identity, green["issuer"], subject, "green")
    with pytest.raises(ClientAuthenticationError, match="AADSTS700211"):
        world.exchange(identity.client_id, blue_token, tmp_path)  # green's credential does not cover blue
    _federate(world, identity, blue_issuer, subject, "blue")
    world.exchange(identity.client_id, blue_token, tmp_path)  # both credentials side by side: both clusters work
    world.exchange(identity.client_id, green_token, tmp_path)
    # Retiring blue's credential leaves green working and blue refused (the end of a rotation).
    world.msi.federated_identity_credentials.delete(DEMO_RG, identity.name, "blue")
    world.exchange(identity.client_id, green_token, tmp_path)
    with pytest.raises(ClientAuthenticationError, match="AADSTS700211"):
        world.exchange(identity.client_id, blue_token, tmp_path)


def test_a_token_signed_by_the_other_apiserver_fails_the_signature_check(world, green, green_core, tmp_path):
    """A token claiming green's issuer but signed by the first apiserver: the key is not in green's JWKS."""
    namespace, name = _service_account(world.core)
    subject = f"system:serviceaccount:{namespace}:{name}"
    genuine = _token(world.core, namespace, name)
    header = jwt.get_unverified_header(genuine)
    claims = {**jwt.decode(genuine, options={"verify_signature": False}), "iss": green["issuer"]}
    key = (world.lab.workdir / "kube" / "pki" / "sa.key").read_bytes()  # the first apiserver's signing key
    forged = jwt.encode(claims, key, algorithm="RS256", headers={"kid": header["kid"]})
    identity = _identity(world)
    _federate(world, identity, green["issuer"], subject, "green")
    with pytest.raises(ClientAuthenticationError, match="AADSTS50013"):
        world.exchange(identity.client_id, forged, tmp_path)


# ------------------------------------------------------------------------------------------------ the audit log


def test_second_clusters_audit_log_tells_dry_runs_from_writes(lab, green, green_core):
    name = f"sa-{uuid.uuid4().hex[:6]}"
    namespace = green["restricted_namespace"]
    body = k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
    first, mark = lab.kube_mark(), lab.kube_mark(cluster=GREEN)
    green_core.create_namespaced_service_account(namespace, body, dry_run="All")
    assert lab.kube_writes(mark, cluster=GREEN) == []
    assert [e["verb"] for e in lab.kube_writes(mark, include_dry_run=True, cluster=GREEN)] == ["create"]
    green_core.create_namespaced_service_account(namespace, body)
    assert [(e["verb"], e["code"]) for e in lab.kube_writes(mark, cluster=GREEN)] == [("create", 201)]
    assert [e["verb"] for e in lab.kube_requests(mark, cluster=GREEN)] == ["create", "create"]
    assert not [e for e in lab.kube_writes(first, include_dry_run=True) if name in e["uri"]]  # not the first's log
    with pytest.raises(KeyError):
        lab.kube_mark(cluster="no-such-cluster")
