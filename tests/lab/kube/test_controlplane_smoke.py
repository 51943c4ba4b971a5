"""Smoke test of the lab's control plane: a real kube-apiserver signs workload identity tokens as AKS would."""

from __future__ import annotations

import json
import re
import ssl
import urllib.request
import uuid
from pathlib import Path

import jwt
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.lab.kube import controlplane
from tests.lab.pki import create_ca

pytestmark = pytest.mark.lab

AUDIENCE = "api://AzureADTokenExchange"
TENANT = str(uuid.uuid4())
# Shaped like an AKS issuer: https, a path and a trailing slash. Nothing serves it; only the string matters here.
ISSUER_URL = f"https://127.0.0.1:1/eastus/{TENANT}/{uuid.uuid4()}/"
JWKS_URI = f"{ISSUER_URL}openid/v1/jwks"


def _pids(workdir: Path) -> list[int]:
    return [int(path.read_text().split()[0]) for path in workdir.glob("*.pid")]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kube")


@pytest.fixture(scope="module")
def ca(workdir):
    return create_ca(workdir / "ca")


@pytest.fixture(scope="module")
def plane(workdir, ca):
    try:
        controlplane.find_binaries()
    except controlplane.BuildError as error:
        pytest.skip(f"kube-testenv cannot be built here: {error}")
    started = controlplane.start(workdir / "plane", ca, ISSUER_URL, JWKS_URI)
    yield started
    pids = _pids(started.workdir)
    controlplane.stop(started.workdir)
    controlplane.stop(started.workdir)  # idempotent
    assert pids and not [pid for pid in pids if _alive(pid)], "control plane processes left running"


@pytest.fixture(scope="module")
def admin(plane):
    with config.new_client_from_config(config_file=str(plane.admin_kubeconfig)) as api:
        yield api


@pytest.fixture(scope="module")
def restricted(plane):
    with config.new_client_from_config(config_file=str(plane.restricted_kubeconfig)) as api:
        yield api


def _get_anonymously(plane, ca, path: str) -> dict:
    """As Entra fetches discovery: TLS to the apiserver, no client certificate."""
    context = ssl.create_default_context(cafile=str(ca.cert))
    with urllib.request.urlopen(plane.url + path, context=context, timeout=10) as response:
        return json.load(response)


def test_version_is_a_real_release(admin):
    git_version = client.VersionApi(admin).get_code().git_version
    assert re.fullmatch(r"v1\.\d+\.\d+", git_version), git_version


def test_token_request_matches_an_aks_federated_token(plane, ca, admin):
    core = client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": "smoke"}})
    core.create_namespaced_service_account("smoke", {"metadata": {"name": "workload"}})
    request = {"spec": {"audiences": [AUDIENCE], "expirationSeconds": 3600}}
    token = core.create_namespaced_service_account_token("workload", "smoke", request).status.token

    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "RS256"
    assert claims["iss"] == ISSUER_URL
    assert claims["sub"] == "system:serviceaccount:smoke:workload"
    assert claims["aud"] == [AUDIENCE]

    discovery = _get_anonymously(plane, ca, "/.well-known/openid-configuration")
    assert discovery["issuer"] == ISSUER_URL
    assert discovery["jwks_uri"] == JWKS_URI
    jwks = _get_anonymously(plane, ca, "/openid/v1/jwks")
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]].key
    verified = jwt.decode(token, key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER_URL)
    assert verified["sub"] == "system:serviceaccount:smoke:workload"


def test_restricted_user_is_confined_to_its_namespace(plane, admin, restricted):
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": "elsewhere"}})
    core = client.CoreV1Api(restricted)
    core.create_namespaced_service_account(plane.restricted_namespace, {"metadata": {"name": "mine"}})
    token = core.create_namespaced_service_account_token(
        "mine", plane.restricted_namespace, {"spec": {"audiences": [AUDIENCE]}}
    )
    assert token.status.token
    for forbidden in (
        lambda: core.create_namespaced_service_account("elsewhere", {"metadata": {"name": "theirs"}}),
        core.list_namespace,
        lambda: core.list_namespaced_secret(plane.restricted_namespace),
    ):
        with pytest.raises(ApiException) as raised:
            forbidden()
        assert raised.value.status == 403
