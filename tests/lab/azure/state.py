"""The emulator's state: configuration, resources keyed by ARM id, principals, long-running operations.

Everything Azure would keep server-side lives here, behind one re-entrant lock; route modules hold the rules.
Resources are stored exactly as a GET returns them (the JSON body), so reads are plain copies.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .throttle import Throttle
from .tokens import IssuerKey, TokenError, TokenIssuer, utc

# Fixed identifiers of the lab's world, so docs and vars files can name them; secrets are random per start.
DEFAULT_TENANT = "72f988bf-0000-4000-8000-00000000a11b"
DEFAULT_SUBSCRIPTION = "00000000-0000-4000-8000-00000000a11b"
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")  # matched lower-cased
# Key Vault's token audience in the public cloud (Key Vault docs, "Authentication, requests and responses"; azure-
# behaviour §7): lab vaults take tokens for it besides their own, so clients configured with the public cloud's Key
# Vault scope work against the lab too. The slash form is taken as well (UNVERIFIED whether Azure's vaults do).
PUBLIC_VAULT_AUDIENCES = ("https://vault.azure.net", "https://vault.azure.net/")


PRIMARY = "primary"  # the name of the first wiring: the lab's own kube-apiserver (kube_* fields of LabConfig)


@dataclass(frozen=True)
class Wiring:
    """A kube-apiserver and the AKS cluster resources wired to it: their OIDC issuer is its --service-account-issuer
    and the emulator publishes its service-account keys there (oidc.py)."""

    name: str
    apiserver_url: str | None
    issuer_url: str
    ca_file: str | None  # the CA its serving certificate chains to; None = the system store
    clusters: list[tuple[str, str]]  # (resource group, cluster name), lower-cased

    @property
    def primary(self) -> bool:
        return self.name == PRIMARY


@dataclass
class LabConfig:
    base_url: str  # https://127.0.0.1:<port>: ARM, Entra and the OIDC issuers
    vault_dns_suffix: str  # "vault.localhost:<port>": vault hosts are <name>.<suffix>, as <name>.vault.azure.net
    tenant_id: str = DEFAULT_TENANT
    subscription_id: str = DEFAULT_SUBSCRIPTION
    location: str = "eastus"
    # ARM's token audience is a name, not an address: the real one keeps tokens looking like Azure's.
    arm_audience: str = "https://management.core.windows.net/"
    # The kube-apiserver the lab runs, and the clusters wired to it (their OIDC issuer is the apiserver's
    # --service-account-issuer and their JWKS is the apiserver's).
    kube_apiserver_url: str | None = None
    kube_issuer_url: str | None = None
    kube_ca_file: str | None = None
    # The lab CA bundle: what the emulated Entra ID trusts when it fetches an external OIDC issuer's discovery
    # document and JWKS over HTTPS (issuers served by this emulator or by a test). None = the system store.
    ca_file: str | None = None
    wired_clusters: list[list[str]] = field(default_factory=list)  # [[resource_group, cluster_name], ...]
    # Further control planes, each wired to one AKS cluster resource the emulator registers for it (POST
    # /_lab/clusters; tests/lab/lab.py add_cluster): [{"name", "resource_group", "cluster", "apiserver_url",
    # "issuer_url", "ca_file", "kubernetes_version"}, ...]. The kube_* fields above stay the lab's first apiserver;
    # wirings() lists them all.
    kube_clusters: list[dict[str, Any]] = field(default_factory=list)
    # The AKS token proxy of identity bindings the emulator serves on a listener of its own (token_proxy.py), for the
    # clusters wired to the lab's kube-apiserver: {"port", "cert", "key", "sni_name", "audience", "kube_client_cert",
    # "kube_client_key"}. Empty: no proxy.
    token_proxy: dict[str, Any] = field(default_factory=dict)
    seed: dict[str, Any] = field(default_factory=dict)  # names and secrets of the seeded world (see seed.py)

    def wirings(self) -> list[Wiring]:
        """Every kube-apiserver the emulated clusters are wired to: the first (the kube_* fields, when an issuer is
        set), then each of kube_clusters."""
        found = []
        if self.kube_issuer_url:
            found.append(
                Wiring(
                    PRIMARY,
                    self.kube_apiserver_url,
                    self.kube_issuer_url,
                    self.kube_ca_file,
                    [(rg.lower(), name.lower()) for rg, name in self.wired_clusters],
                )
            )
        for entry in self.kube_clusters:
            found.append(
                Wiring(
                    entry["name"],
                    entry.get("apiserver_url"),
                    entry["issuer_url"],
                    entry.get("ca_file"),
                    [(entry["resource_group"].lower(), entry["cluster"].lower())],
                )
            )
        return found

    def wiring_of_cluster(self, resource_group: str, name: str) -> Wiring | None:
        """The wiring an AKS cluster resource belongs to, if any (names compared as ARM does, ignoring case)."""
        key = (resource_group.lower(), name.lower())
        return next((wiring for wiring in self.wirings() if key in wiring.clusters), None)

    def wiring_of_issuer(self, issuer: str) -> Wiring | None:
        """The wiring whose apiserver's --service-account-issuer is exactly ``issuer``."""
        return next((wiring for wiring in self.wirings() if wiring.issuer_url == issuer), None)

    @property
    def vault_audience(self) -> str:
        # Key Vault's SDK only accepts a challenge whose resource is a parent domain of the vault host, so the
        # lab's Key Vault audience is https://<suffix> as Azure's is https://vault.azure.net.
        return f"https://{self.vault_dns_suffix}"


DEFAULT_SETTINGS: dict[str, float] = {
    "lro_seconds": 2.0,  # how long an AKS PUT stays Updating/Creating (Azure: minutes, azure-behaviour §3.5)
    "fic_write_seconds": 0.05,  # a federated credential write holds the identity this long (409 on overlap)
    "credential_propagation_seconds": 0.0,  # a new federated credential fails at Entra for N s (azure-behaviour §4)
    "role_propagation_seconds": 0.0,  # a new role assignment is not effective for N s (azure-behaviour §7, §9)
    "token_lifetime_seconds": 3600.0,
    "arm_latency_seconds": 0.0,  # every ARM request waits this long first: the round trip to management.azure.com
    "throttling": 0.0,  # 1 = Azure's documented request limits apply (throttle.py), 429 with Retry-After beyond
}

Seeder = Callable[["State"], None]
_SEEDERS: list[tuple[int, Seeder]] = []


def seeder(order: int) -> Callable[[Seeder], Seeder]:
    """Register a function that seeds part of the world on start and on /_lab/reset (lowest order first)."""

    def register(function: Seeder) -> Seeder:
        _SEEDERS.append((order, function))
        return function

    return register


class State:
    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.tokens = TokenIssuer(config.tenant_id)
        # The key AKS's token proxy signs identity-binding tokens with; every binding issuer publishes it (LAB CHOICE,
        # azure-behaviour §10). Made once per emulator, like Entra's own key: it survives /_lab/reset.
        self.binding_issuer_key = IssuerKey()
        self.throttle = Throttle()  # the request buckets: emptied on reset and whenever throttling is switched
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        with self.lock:
            self.settings: dict[str, float] = dict(DEFAULT_SETTINGS)
            self.resources: dict[str, dict[str, Any]] = {}
            self.meta: dict[str, dict[str, Any]] = {}  # private bookkeeping per resource id (never returned)
            self.principals: dict[str, dict[str, Any]] = {}  # object id -> principal
            self.operations: dict[str, dict[str, Any]] = {}  # long-running operations by id
            self.secrets: dict[str, dict[str, list[dict[str, Any]]]] = {}  # vault -> secret name -> versions
            self.deleted_secrets: dict[str, dict[str, dict[str, Any]]] = {}  # vault -> name -> soft-deleted secret
            self.throttle.reset()
            for _order, function in sorted(_SEEDERS, key=lambda item: item[0]):
                function(self)

    def update_settings(self, values: dict[str, Any]) -> None:
        with self.lock:
            for key, value in values.items():
                if key not in DEFAULT_SETTINGS:
                    raise ValueError(f"unknown lab setting {key!r}")
                if key == "throttling" and bool(float(value)) != bool(self.settings[key]):
                    self.throttle.reset()  # switched on (or off): the buckets start full
                self.settings[key] = float(value)

    def settings_view(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.settings)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(
                {
                    "config": asdict(self.config),
                    "settings": self.settings,
                    "resources": self.resources,
                    "principals": {
                        k: {n: v for n, v in p.items() if n != "secret"} for k, p in self.principals.items()
                    },
                    "operations": self.operations,
                    "secrets": {v: sorted(names) for v, names in self.secrets.items()},
                    "deleted_secrets": {v: sorted(names) for v, names in self.deleted_secrets.items()},
                }
            )

    @staticmethod
    def now() -> float:
        return time.time()

    # ------------------------------------------------------------------ resources
    def get(self, resource_id: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.resources.get(resource_id.lower())
            return copy.deepcopy(found) if found is not None else None

    def put(self, resource_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.resources[resource_id.lower()] = copy.deepcopy(body)
            self.meta.setdefault(resource_id.lower(), {"created": self.now()})
            return copy.deepcopy(body)

    def delete(self, resource_id: str) -> dict[str, Any] | None:
        """Delete a resource and everything under it (ARM deletes children with their parent)."""
        with self.lock:
            key = resource_id.lower()
            found = self.resources.pop(key, None)
            self.meta.pop(key, None)
            for child in [k for k in self.resources if k.startswith(key + "/")]:
                self.resources.pop(child)
                self.meta.pop(child, None)
            return found

    def children(self, parent_id: str, type_segment: str) -> list[dict[str, Any]]:
        """Direct children of ``parent_id`` under ``/<type_segment>/<name>`` (case-insensitive)."""
        prefix = f"{parent_id}/{type_segment}/".lower()
        with self.lock:
            return [
                copy.deepcopy(body)
                for key, body in sorted(self.resources.items())
                if key.startswith(prefix) and "/" not in key[len(prefix) :]
            ]

    def find(self, predicate: Callable[[str, dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(body) for key, body in sorted(self.resources.items()) if predicate(key, body)]

    def meta_of(self, resource_id: str) -> dict[str, Any]:
        with self.lock:
            return self.meta.setdefault(resource_id.lower(), {"created": self.now()})

    # ------------------------------------------------------------------ principals
    def add_principal(self, object_id: str, app_id: str, kind: str, display_name: str, **extra: Any) -> None:
        with self.lock:
            self.principals[object_id] = {
                "object_id": object_id,
                "app_id": app_id,
                "kind": kind,  # "ServicePrincipal" (an app registration) or "ManagedIdentity"
                "display_name": display_name,
                "created": self.now(),
                **extra,
            }

    def principal_by_app_id(self, app_id: str) -> dict[str, Any] | None:
        with self.lock:
            for principal in self.principals.values():
                if principal["app_id"].lower() == (app_id or "").lower():
                    return copy.deepcopy(principal)
        return None

    def remove_principal(self, object_id: str) -> None:
        with self.lock:
            self.principals.pop(object_id, None)

    # ------------------------------------------------------------------ planes and authentication
    def plane_of(self, host: str, path: str) -> tuple[str, str | None]:
        suffix = "." + self.config.vault_dns_suffix.lower()
        if host.endswith(suffix):
            return "vault", host[: -len(suffix)]
        lowered = path.lower()
        if lowered.startswith("/_lab/") or lowered == "/_lab":
            return "lab", None
        parts = lowered.strip("/").split("/")
        # An AKS issuer's path is /{tenant-id}/{guid}/ (azure-behaviour §5): two GUIDs. Entra's paths after the tenant
        # are words (oauth2, v2.0, discovery), and ARM's start with a word (subscriptions, providers, metadata).
        if len(parts) >= 2 and _GUID.match(parts[0]) and _GUID.match(parts[1]):
            return "oidc", None
        if len(parts) >= 2 and (parts[1] in ("oauth2", "v2.0", "discovery") or parts[:2] == ["common", "discovery"]):
            return "entra", None
        return "arm", None

    def authenticate(self, request, kind: str) -> dict[str, Any]:
        """Validate the bearer token for ``kind`` ("arm" or "vault") and return its claims, or raise TokenError
        with the response that plane gives."""
        from .server import ArmError

        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if kind == "vault":
            return self._authenticate_vault(token)
        if not token:
            raise TokenError(
                lambda: _arm_401(
                    ArmError, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
                )
            )
        try:
            claims = self.tokens.decode(token)
        except Exception:
            raise TokenError(
                lambda: _arm_401(ArmError, "InvalidAuthenticationToken", "The access token is invalid.")
            ) from None
        if claims["exp"] < self.now():
            message = f"The access token expiry UTC time '{utc(claims['exp'])}' is earlier than current UTC time '{utc(self.now())}'."
            raise TokenError(lambda: _arm_401(ArmError, "ExpiredAuthenticationToken", message))
        # ARM accepts both of its names, with and without the slash: its own 401 lists 'https://management.core.
        # windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'.
        arm_names = (self.config.arm_audience, "https://management.azure.com/", self.config.base_url + "/")
        allowed = {name for base in arm_names for name in (base, base.rstrip("/"))}
        if claims["aud"] not in allowed:
            listed = ",".join(f"'{a}'" for a in sorted(allowed))
            message = (
                f"The access token has been obtained for wrong audience or resource '{claims['aud']}'. "
                f"It should exactly match with one of the allowed audiences {listed}."
            )
            raise TokenError(lambda: _arm_401(ArmError, "InvalidAuthenticationTokenAudience", message))
        return claims

    def _authenticate_vault(self, token: str) -> dict[str, Any]:
        from .server import Response

        # azure-behaviour §7: 401 + a challenge naming the authority and the resource; the SDK then fetches a token
        # for <resource>/.default and repeats the request.
        challenge = {
            "WWW-Authenticate": (
                f'Bearer authorization="{self.config.base_url}/{self.config.tenant_id}", '
                f'resource="{self.config.vault_audience}"'
            )
        }

        def unauthorized(message: str) -> Callable[[], Any]:
            return lambda: Response(401, {"error": {"code": "Unauthorized", "message": message}}, dict(challenge))

        if not token:
            raise TokenError(unauthorized("AKV10000: Request is missing a Bearer or PoP token."))
        try:
            claims = self.tokens.decode(token)
        except Exception:
            raise TokenError(unauthorized("AKV10001: Invalid token.")) from None  # UNVERIFIED wording
        if claims["aud"].rstrip("/") != self.config.vault_audience and claims["aud"] not in PUBLIC_VAULT_AUDIENCES:
            raise TokenError(
                unauthorized(
                    f"AKV10022: Invalid audience. Expected {self.config.vault_audience}, found: {claims['aud']}."
                )
            )
        if claims["exp"] < self.now():
            raise TokenError(unauthorized("AKV10032: Token expired."))  # UNVERIFIED wording
        return claims


def _arm_401(error_class, code: str, message: str):
    headers = {
        "WWW-Authenticate": f'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", error_description="{message}"'
    }
    return error_class(401, code, message, headers).response()
