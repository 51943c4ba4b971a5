"""The OIDC issuers of the emulated AKS clusters: discovery document and JSON Web Key Set, anonymous, over HTTPS.

AKS publishes ``{issuerURL}.well-known/openid-configuration`` and ``{issuerURL}openid/v1/jwks`` for every cluster
with the issuer enabled (azure-behaviour §5); Entra fetches them to verify service-account tokens. Here:

- a cluster wired to a lab kube-apiserver publishes that apiserver's keys, read from its own ``/openid/v1/jwks``
  (anonymous, TLS checked against that apiserver's CA) just as AKS publishes the keys its clusters sign with, so a
  token the real apiserver signed verifies through this issuer. The lab's first apiserver is one wiring, and every
  cluster added at runtime (POST /_lab/clusters, aks.py) another, with keys, issuer and CA of its own
  (state.LabConfig.wirings);
- any other cluster publishes a valid discovery document and an empty key set: nothing signs for it;
- an identity binding's issuer (identity_binding.py) publishes the key the lab's AKS token proxy signs with
  (token_proxy.py; LAB CHOICE, azure-behaviour §10).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .aks import RESPONSE_TYPE, settled_cluster
from .server import ArmError, Request, Response, route
from .state import State

_DISCOVERY = ".well-known/openid-configuration"
_JWKS = "openid/v1/jwks"
_FETCH_TIMEOUT_SECONDS = 5.0


# Who signs for an issuer, and so which keys its JWKS holds.
APISERVER = "apiserver"  # the service-account keys of the lab kube-apiserver whose issuer it is
TOKEN_PROXY = "token_proxy"  # the key of the lab's AKS token proxy (state.binding_issuer_key)
NOBODY = None  # an empty key set

# Who publishes an issuer at a path: a function (state, issuer path without its trailing slash) -> (issuer URL, who
# signs for it: APISERVER, TOKEN_PROXY or NOBODY), or None. The clusters' issuers are below; identity_binding.py adds
# the bindings' issuers, which have the same path shape.
IssuerSource = Callable[[State, str], "tuple[str, str | None] | None"]
_ISSUER_SOURCES: list[IssuerSource] = []


def issuer_source(source: IssuerSource) -> IssuerSource:
    _ISSUER_SOURCES.append(source)
    return source


@issuer_source
def _cluster_issuer(state: State, issuer_path: str) -> tuple[str, str | None] | None:
    """Among clusters whose issuer is enabled and published; only wired clusters carry an apiserver's issuer
    (aks.issuer_url), so the URL tells which apiserver's keys to publish."""
    for found in state.find(lambda key, body: body.get("type") == RESPONSE_TYPE):
        cluster = settled_cluster(state, found["id"])
        profile = (cluster or {}).get("properties", {}).get("oidcIssuerProfile", {})
        if not profile.get("enabled") or not state.meta_of(found["id"]).get("issuer_published"):
            continue
        issuer = profile["issuerURL"]
        if urlsplit(issuer).path.rstrip("/") == issuer_path:
            return issuer, APISERVER if state.config.wiring_of_issuer(issuer) is not None else NOBODY
    return None


def _discovery(issuer: str) -> dict[str, Any]:
    # The fields kube-apiserver serves (and AKS's issuer mirrors): issuer exactly as configured, trailing slash
    # included; jwks_uri under it; RS256-signed id_tokens only.
    return {
        "issuer": issuer,
        "jwks_uri": issuer.rstrip("/") + "/" + _JWKS,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }


def apiserver_keys(state: State, issuer: str | None = None) -> bytes:
    """The service-account public keys of the lab kube-apiserver whose issuer is ``issuer`` (default: the lab's first
    apiserver). 502/503 when they cannot be had (UNVERIFIED: what AKS's issuer host answers when its keys are
    missing)."""
    config = state.config
    if issuer is None:
        apiserver, cafile = config.kube_apiserver_url, config.kube_ca_file
    else:
        wiring = config.wiring_of_issuer(issuer)
        apiserver, cafile = (wiring.apiserver_url, wiring.ca_file) if wiring else (None, None)
    if not apiserver:
        raise ArmError(
            503,
            "ServiceUnavailable",
            "The cluster's OIDC signing keys are not available: no kube-apiserver is configured.",
        )
    context = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    # No proxies: the apiserver is on loopback, and an HTTPS_PROXY in the environment must not intercept it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    url = apiserver.rstrip("/") + "/" + _JWKS
    try:
        with opener.open(url, timeout=_FETCH_TIMEOUT_SECONDS) as answer:
            payload = answer.read()
        if not isinstance(json.loads(payload).get("keys"), list):
            raise ValueError("no 'keys' array")
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise ArmError(
            502, "BadGateway", f"The cluster's OIDC signing keys could not be read from {url}: {error}"
        ) from None
    return payload


_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


# AKS's issuer path is /{tenant-id}/{guid}/ (azure-behaviour §5), an identity binding's /{tenant-id}/{client-id}
# without the slash; their documents hang below. state.plane_of sends paths whose first two segments are GUIDs here,
# so Entra's /{tenant}/oauth2/... never reach this route.
@route(
    "GET",
    rf"(?P<issuer_path>/{_GUID}/{_GUID})/(?P<document>\.well-known/openid-configuration|openid/v1/jwks)",
    plane="oidc",
    auth=None,
)
def get_issuer_document(request: Request, state: State) -> Response:
    found = next(filter(None, (source(state, request.params["issuer_path"]) for source in _ISSUER_SOURCES)), None)
    if found is None:  # unknown issuer, or one that is disabled / not yet published
        raise ArmError(404, "NotFound", f"No OIDC issuer document at '{request.path}'.")  # UNVERIFIED wording
    issuer, signer = found
    if request.params["document"].lower() == _DISCOVERY:
        return Response(200, _discovery(issuer), content_type="application/json")
    if signer == APISERVER:
        keys = apiserver_keys(state, issuer)
    elif signer == TOKEN_PROXY:
        keys = json.dumps({"keys": [state.binding_issuer_key.public_jwk()]}).encode()
    else:
        keys = json.dumps({"keys": []}).encode()
    return Response(200, keys, content_type="application/jwk-set+json")  # kube-apiserver's media type for JWKS
