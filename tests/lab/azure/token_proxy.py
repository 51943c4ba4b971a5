"""The AKS token proxy of identity bindings, played by the emulator on a listener of its own (azure-behaviour §10).

On AKS a pod annotated ``azure.workload.identity/use-identity-binding: "true"`` gets from the webhook
AZURE_KUBERNETES_TOKEN_PROXY, AZURE_KUBERNETES_SNI_NAME and AZURE_KUBERNETES_CA_FILE besides the usual variables, and
a projected service-account token with the audience ``api://AKSIdentityBinding``; an Azure Identity library with the
proxy enabled (Python: ``WorkloadIdentityCredential(enable_azure_proxy=True)``) then sends its token request,
``POST {proxy}/{tenant}/oauth2/v2.0/token`` with that token as ``client_assertion``, to the proxy over TLS with that
SNI name, trusting only that CA. The proxy exchanges it for an Entra token of the identity through the identity's
binding issuer (Learn: identity-bindings-concepts, identity-bindings).

What the lab's proxy does, in order (the real proxy's internals are not public; each step is a LAB CHOICE built from
what the docs say it guarantees):

1. TLS: a certificate for the SNI name alone, issued by the lab CA (the cluster CA, which the ConfigMap
   ``kube-root-ca.crt`` carries and the webhook projects as AZURE_KUBERNETES_CA_FILE); a handshake naming another
   server, or none, is refused, as a front end routing by SNI would not reach the proxy.
2. The assertion must be a service-account token of the lab cluster: RS256 signature by a key of the lab
   kube-apiserver's JWKS, ``iss`` = its --service-account-issuer, the webhook's custom audience in ``aud``, ``exp``
   and ``nbf`` around now.
3. Kubernetes RBAC must let that ServiceAccount ``use-managed-identity`` the resource ``{client_id}`` of the API group
   ``cid.wi.aks.azure.com`` (identity-bindings how-to): a SubjectAccessReview at the lab kube-apiserver, as the
   lab's own user ``lab-aks-token-proxy`` (bound to the built-in ClusterRole ``system:auth-delegator``).
4. The identity must have a finished binding on a cluster wired to the lab kube-apiserver.
5. The proxy mints a token of the binding's issuer (``iss`` = the binding's ``oidcIssuerUrl``, ``sub`` and ``aud`` as
   the ``aks-identity-binding`` credential names them), signed by the key every binding issuer publishes
   (state.binding_issuer_key), and presents it to the emulated Entra token endpoint over HTTPS exactly as a client
   would (client credentials, jwt-bearer assertion, the caller's other form fields unchanged). Entra's answer,
   success or error, goes back to the caller as it came.

Refusals of steps 1-4 are OAuth-shaped JSON, ``{"error", "error_description"}`` (RFC 6749 §5.2), with the statuses
below: the real proxy's refusals are not public (LAB CHOICE, azure-behaviour §10).
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

from .entra import JWT_BEARER
from .identity_binding import CREDENTIAL_AUDIENCE, credential_subject, wired_bindings
from .oidc import apiserver_keys
from .server import ArmError, RequestLog
from .state import State

RBAC_GROUP = "cid.wi.aks.azure.com"  # identity-bindings how-to: the ClusterRole's apiGroups
RBAC_VERB = "use-managed-identity"  # ... and its verbs; the resource is the identity's client ID
# LAB CHOICE (UNVERIFIED): how far the proxy lets a service-account token's exp/nbf miss the clock.
CLOCK_SKEW_SECONDS = 60
# LAB CHOICE (UNVERIFIED): the lifetime of the token the proxy mints for the binding issuer; Entra only needs it to be
# valid while it exchanges it.
MINTED_LIFETIME_SECONDS = 600
_TIMEOUT_SECONDS = 10.0
_TOKEN_PATH = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token/?$")


class ProxyRefusal(Exception):
    """A refusal of the proxy itself: OAuth-shaped (LAB CHOICE; the real proxy's are not public)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def body(self) -> bytes:
        return json.dumps({"error": self.error, "error_description": self.description}).encode()


# ---------------------------------------------------------------------------------------------------------------
# The checks


def _verify_service_account_token(state: State, assertion: str) -> dict[str, Any]:
    """Step 2: a token the lab kube-apiserver signed, for the custom audience, valid now. Returns its claims."""
    config, proxy = state.config, state.config.token_proxy

    def refuse(reason: str) -> ProxyRefusal:
        return ProxyRefusal(
            401, "invalid_client", f"The client assertion is not a service account token of this cluster: {reason}."
        )

    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise refuse("it is not a JWT") from None
    try:
        keys = json.loads(apiserver_keys(state)).get("keys", [])
    except ArmError as error:
        raise ProxyRefusal(503, "temporarily_unavailable", error.message) from None
    key = next((k for k in keys if k.get("kid") == header.get("kid")), None)
    if key is None or header.get("alg") != "RS256":
        raise refuse("it is not signed by a key of the cluster's service account issuer")
    try:
        claims = jwt.decode(
            assertion,
            jwt.PyJWK(key).key,
            algorithms=["RS256"],
            audience=proxy["audience"],
            issuer=config.kube_issuer_url,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["exp", "iss", "sub", "aud"]},
        )
    except jwt.InvalidSignatureError:
        raise refuse("its signature does not verify") from None
    except jwt.ExpiredSignatureError:
        raise refuse("it has expired") from None
    except jwt.ImmatureSignatureError:
        raise refuse("it is not valid yet") from None
    except jwt.InvalidAudienceError:
        raise refuse(f"its audience is not '{proxy['audience']}'") from None
    except jwt.InvalidIssuerError:
        raise refuse(f"its issuer is not '{config.kube_issuer_url}'") from None
    except jwt.PyJWTError as error:
        raise refuse(str(error).rstrip(".")) from None
    parts = str(claims["sub"]).split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"] or not all(parts[2:]):
        raise refuse("its subject is not a service account")
    return claims


def _kube_post(state: State, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the lab kube-apiserver as the proxy's own user (a client certificate of the lab CA)."""
    config, proxy = state.config, state.config.token_proxy
    context = ssl.create_default_context(cafile=config.kube_ca_file)
    context.load_cert_chain(proxy["kube_client_cert"], proxy["kube_client_key"])
    # No proxies: the apiserver is on loopback, and an HTTPS_PROXY in the environment must not intercept it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(
        config.kube_apiserver_url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with opener.open(request, timeout=_TIMEOUT_SECONDS) as answer:
        return json.loads(answer.read())


def _check_rbac(state: State, claims: dict[str, Any], client_id: str) -> None:
    """Step 3: a SubjectAccessReview for the ServiceAccount, with the user name and groups the apiserver's
    service-account authenticator gives it (Kubernetes "Authenticating": system:serviceaccount:<ns>:<name>, groups
    system:serviceaccounts, system:serviceaccounts:<ns>, and system:authenticated for every authenticated user).
    LAB CHOICE: the review is cluster-wide (no namespace), as the docs grant the verb with a ClusterRole and a
    ClusterRoleBinding; a RoleBinding in the ServiceAccount's namespace does not grant it here."""
    user = str(claims["sub"])
    namespace = user.split(":")[2]
    spec: dict[str, Any] = {
        "user": user,
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
        "resourceAttributes": {"group": RBAC_GROUP, "resource": client_id, "verb": RBAC_VERB},
    }
    uid = ((claims.get("kubernetes.io") or {}).get("serviceaccount") or {}).get("uid")
    if uid:
        spec["uid"] = uid
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
    try:
        answer = _kube_post(state, "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise ProxyRefusal(
            503,
            "temporarily_unavailable",
            f"The cluster could not be asked whether '{user}' may use the identity: {error}",
        ) from None
    if not (answer.get("status") or {}).get("allowed"):
        raise ProxyRefusal(
            403,
            "unauthorized_client",
            f"The service account '{user}' is not allowed to use the managed identity '{client_id}': it needs the verb "
            f"'{RBAC_VERB}' on resource '{client_id}' of API group '{RBAC_GROUP}'.",
        )


def _binding_issuer(state: State, client_id: str) -> str:
    """Step 4: the issuer of the identity's binding on this (a wired) cluster."""
    found = wired_bindings(state, client_id)
    if not found:
        raise ProxyRefusal(
            403,
            "unauthorized_client",
            f"The managed identity '{client_id}' has no identity binding on this cluster.",
        )
    return found[0]["properties"]["oidcIssuer"]["oidcIssuerUrl"]


def _mint(state: State, issuer: str, client_id: str) -> str:
    """Step 5: a token of the binding issuer, as the ``aks-identity-binding`` credential expects it."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": credential_subject(client_id),
        "aud": [CREDENTIAL_AUDIENCE],
        "iat": now,
        "nbf": now,
        "exp": now + MINTED_LIFETIME_SECONDS,
        "jti": str(uuid.uuid4()),
    }
    return state.binding_issuer_key.sign(claims)


def _ask_entra(state: State, tenant: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes, dict]:
    """Present the exchange to the emulated Entra token endpoint over HTTPS, as any client does; its answer as is."""
    config = state.config
    context = ssl.create_default_context(cafile=config.ca_file) if config.ca_file else ssl.create_default_context()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    forwarded = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if headers.get("client-request-id"):
        forwarded["client-request-id"] = headers["client-request-id"]  # Entra reports it as the correlation id
    request = urllib.request.Request(
        f"{config.base_url}/{urllib.parse.quote(tenant, safe='')}/oauth2/v2.0/token",
        data=urllib.parse.urlencode(form).encode(),
        method="POST",
        headers=forwarded,
    )
    try:
        with opener.open(request, timeout=_TIMEOUT_SECONDS) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)
    except (urllib.error.URLError, OSError) as error:
        raise ProxyRefusal(
            503, "temporarily_unavailable", f"Microsoft Entra ID could not be reached: {error}"
        ) from None


def exchange(state: State, tenant: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes, dict]:
    """The proxy's answer to a token request: (status, body, headers)."""
    if not state.config.kube_issuer_url or not state.config.kube_apiserver_url:
        raise ProxyRefusal(503, "temporarily_unavailable", "The token proxy is not wired to a cluster.")
    for name in ("client_id", "client_assertion"):
        if not form.get(name):
            raise ProxyRefusal(400, "invalid_request", f"The request body must contain the parameter '{name}'.")
    if form.get("client_assertion_type") != JWT_BEARER:
        raise ProxyRefusal(400, "invalid_request", f"client_assertion_type must be '{JWT_BEARER}'.")
    claims = _verify_service_account_token(state, form["client_assertion"])
    _check_rbac(state, claims, form["client_id"])
    issuer = _binding_issuer(state, form["client_id"])
    return _ask_entra(state, tenant, {**form, "client_assertion": _mint(state, issuer, form["client_id"])}, headers)


# ---------------------------------------------------------------------------------------------------------------
# The listener


class TokenProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: State, log: RequestLog, tls: ssl.SSLContext) -> None:
        super().__init__(address, _Handler)
        self.state, self.log, self.tls = state, log, tls

    def get_request(self):  # TLS per connection, so one bad handshake never blocks the accept loop
        sock, addr = self.socket.accept()
        sock.settimeout(30)
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TokenProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.request.close()
            raise
        super().setup()

    def _dispatch(self) -> None:
        started = time.monotonic()
        split = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            found = _TOKEN_PATH.match(urllib.parse.unquote(split.path))
            if not found:
                raise ProxyRefusal(404, "invalid_request", f"No token endpoint at '{split.path}'.")
            if self.command != "POST":
                raise ProxyRefusal(405, "invalid_request", f"The token endpoint does not support '{self.command}'.")
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
            status, payload, answer_headers = exchange(self.server.state, found["tenant"], form, headers)
            content_type = answer_headers.get("Content-Type", "application/json; charset=utf-8")
            passed = {k: v for k, v in answer_headers.items() if k.lower() in ("cache-control", "pragma")}
        except ProxyRefusal as refusal:
            status, payload, content_type, passed = refusal.status, refusal.body(), "application/json", {}
        except Exception as error:  # a lab bug must surface, not hang the client
            refusal = ProxyRefusal(500, "server_error", f"{type(error).__name__}: {error}")
            status, payload, content_type, passed = refusal.status, refusal.body(), "application/json", {}
        self.server.log.add(
            {
                "time": time.time(),
                "plane": "token_proxy",
                "method": self.command,
                "host": headers.get("host", ""),
                "path": split.path,
                "query": {},
                "status": status,
                "caller": None,
                "duration": round(time.monotonic() - started, 4),
            }
        )
        self.send_response(status)
        for name, value in passed.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _dispatch


def _tls(cert: str, key: str, sni_name: str) -> ssl.SSLContext:
    """The proxy's TLS: its certificate names the SNI name only; a ClientHello naming no server or another one is
    refused with the unrecognized_name alert (RFC 6066 §3), as the SNI-routed front end would not lead it here."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)

    def check_name(_socket: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> int | None:
        return None if server_name == sni_name else ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    context.sni_callback = check_name
    return context


def start(state: State, log: RequestLog, host: str = "127.0.0.1") -> TokenProxyServer | None:
    """Listen (on ``state.config.token_proxy['port']``) and serve in a daemon thread; None when no proxy is set."""
    proxy = state.config.token_proxy
    if not proxy:
        return None
    server = TokenProxyServer(
        (host, int(proxy.get("port", 0))), state, log, _tls(proxy["cert"], proxy["key"], proxy["sni_name"])
    )
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    return server
