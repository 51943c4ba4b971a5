"""The emulator's side of add_cluster (docs/lab.md §8), without Kubernetes: POST /_lab/clusters wires another
apiserver's issuer to a new AKS cluster resource, which ARM clients then read like any other cluster.

The whole chain with a second real kube-apiserver is tests/lab/test_second_cluster.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.core.credentials import AccessToken
from azure.mgmt.containerservice import ContainerServiceClient

from .inprocess import RunningEmulator, running_emulator

GREEN = "green"


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[RunningEmulator]:
    with running_emulator(tmp_path_factory.mktemp("emulator")) as running:
        yield running


@pytest.fixture
def emulator(lab: RunningEmulator) -> RunningEmulator:
    """The shared emulator wired as the lab wires it: the first apiserver's issuer on the seed cluster."""
    config = lab.state.config
    config.kube_issuer_url = f"{lab.base_url}/{config.tenant_id}/{lab.seed['cluster_issuer_uuid']}/"
    config.kube_apiserver_url = "https://127.0.0.1:1"  # never reached here
    config.wired_clusters = [[lab.seed["resource_group"], lab.seed["cluster"]]]
    config.kube_clusters = []
    lab.state.reset()
    yield lab
    config.kube_clusters = []
    config.wired_clusters, config.kube_issuer_url, config.kube_apiserver_url = [], None, None
    lab.state.reset()


class _Token:
    def __init__(self, emulator: RunningEmulator) -> None:
        self.emulator = emulator

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken(self.emulator.token(), 2**31)


def _aks(emulator: RunningEmulator) -> ContainerServiceClient:
    return ContainerServiceClient(
        _Token(emulator),
        emulator.config.subscription_id,
        base_url=emulator.base_url,
        credential_scopes=["https://management.core.windows.net/.default"],
        connection_verify=str(emulator.ca_file),
    )


def _body(emulator: RunningEmulator, **changes) -> dict:
    body = {
        "name": GREEN,
        "resource_group": emulator.seed["resource_group"],
        "cluster": f"{emulator.seed['cluster']}-{GREEN}",
        "apiserver_url": "https://127.0.0.1:2",
        "issuer_url": f"{emulator.base_url}/{emulator.config.tenant_id}/{uuid.uuid4()}/",
        "ca_file": str(emulator.ca_file),
    }
    return {**body, **changes}


def test_a_registered_cluster_is_an_aks_cluster_with_the_apiservers_issuer(emulator):
    http = emulator.session()
    body = _body(emulator)
    mark = emulator.server.log.last_seq
    answer = http.post(emulator.base_url + "/_lab/clusters", json=body)
    assert answer.status_code == 201, answer.text
    cluster = _aks(emulator).managed_clusters.get(body["resource_group"], body["cluster"])  # an unmodified ARM client
    assert cluster.provisioning_state == "Succeeded"
    assert cluster.oidc_issuer_profile.enabled is True
    assert cluster.oidc_issuer_profile.issuer_url == body["issuer_url"]
    assert cluster.security_profile.workload_identity.enabled is True
    assert answer.json()["id"].lower() == cluster.id.lower()
    # Its issuer is published (discovery needs no key fetch); the first cluster's issuer stays the first apiserver's.
    discovery = http.get(body["issuer_url"] + ".well-known/openid-configuration")
    assert discovery.status_code == 200 and discovery.json()["issuer"] == body["issuer_url"]
    wirings = {w["name"]: w for w in http.get(emulator.base_url + "/_lab/clusters").json()["clusters"]}
    assert wirings["primary"]["issuer_url"] == emulator.config.kube_issuer_url
    assert wirings[GREEN]["issuer_url"] == body["issuer_url"]
    assert wirings[GREEN]["clusters"] == [[body["resource_group"].lower(), body["cluster"].lower()]]
    # No ARM request was logged: the cluster stands for one built beforehand.
    assert not [r for r in emulator.server.log.since(mark) if r["method"] != "GET" and r["plane"] == "arm"]


def test_registering_again_updates_the_apiserver_and_keeps_the_cluster(emulator):
    http = emulator.session()
    body = _body(emulator)
    assert http.post(emulator.base_url + "/_lab/clusters", json=body).status_code == 201
    before = _aks(emulator).managed_clusters.get(body["resource_group"], body["cluster"])
    again = http.post(emulator.base_url + "/_lab/clusters", json={**body, "apiserver_url": "https://127.0.0.1:3"})
    assert again.status_code == 200
    after = _aks(emulator).managed_clusters.get(body["resource_group"], body["cluster"])
    assert after.as_dict() == before.as_dict()
    [green] = [w for w in http.get(emulator.base_url + "/_lab/clusters").json()["clusters"] if w["name"] == GREEN]
    assert green["apiserver_url"] == "https://127.0.0.1:3"


def test_reset_brings_a_registered_cluster_back(emulator):
    http = emulator.session()
    body = _body(emulator)
    http.post(emulator.base_url + "/_lab/clusters", json=body)
    http.post(emulator.base_url + "/_lab/reset", json={})
    cluster = _aks(emulator).managed_clusters.get(body["resource_group"], body["cluster"])
    assert cluster.oidc_issuer_profile.issuer_url == body["issuer_url"]


def test_removing_unwires_and_deletes_the_cluster(emulator):
    http = emulator.session()
    body = _body(emulator)
    http.post(emulator.base_url + "/_lab/clusters", json=body)
    assert http.delete(emulator.base_url + f"/_lab/clusters/{GREEN}").status_code == 200
    assert http.get(body["issuer_url"] + ".well-known/openid-configuration").status_code == 404
    names = [c.name for c in _aks(emulator).managed_clusters.list_by_resource_group(body["resource_group"])]
    assert body["cluster"] not in names
    assert http.delete(emulator.base_url + f"/_lab/clusters/{GREEN}").status_code == 404


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"name": "primary"}, 400),  # the first apiserver's wiring has that name
        ({"name": "Green"}, 400),
        ({"issuer_url": "https://127.0.0.1:1/somewhere/"}, 400),  # not served by this emulator
        ({"issuer_url": "{base}/{tenant}/{guid}"}, 400),  # AKS issuers end with a slash
        ({"issuer_url": "{base}/{tenant}/{GUID}/"}, 400),  # lower-case GUIDs, as AKS's
        ({"apiserver_url": "http://127.0.0.1:2"}, 400),
        ({"resource_group": "rg-nowhere"}, 404),
        ({"issuer_url": "{first}"}, 409),  # the first apiserver's issuer
        ({"cluster": "{seed}"}, 409),  # wired to the first apiserver already
    ],
)
def test_bad_registrations_are_refused(emulator, changes, status):
    guid = str(uuid.uuid4())
    values = {
        "base": emulator.base_url,
        "tenant": emulator.config.tenant_id,
        "guid": guid,
        "GUID": guid.upper(),
        "first": emulator.config.kube_issuer_url,
        "seed": emulator.seed["cluster"],
    }
    changes = {k: v.format(**values) for k, v in changes.items()}
    answer = emulator.session().post(emulator.base_url + "/_lab/clusters", json=_body(emulator, **changes))
    assert answer.status_code == status, answer.text
    assert emulator.config.kube_clusters == []


def test_an_existing_unwired_cluster_is_not_taken_over(emulator):
    http = emulator.session(emulator.token())
    body = _body(emulator, cluster="aks-someone-elses")
    url = (
        f"{emulator.base_url}/subscriptions/{emulator.config.subscription_id}/resourceGroups/{body['resource_group']}"
        f"/providers/Microsoft.ContainerService/managedClusters/{body['cluster']}?api-version=2026-01-01"
    )
    pools = [{"name": "nodepool1", "count": 1, "vmSize": "Standard_DS2_v2", "mode": "System"}]
    created = http.put(url, json={"location": "eastus", "properties": {"dnsPrefix": "x", "agentPoolProfiles": pools}})
    assert created.status_code == 201, created.text
    answer = emulator.session().post(emulator.base_url + "/_lab/clusters", json=body)
    assert answer.status_code == 409
