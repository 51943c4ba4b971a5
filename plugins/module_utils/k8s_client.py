# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Base of every Kubernetes module in this collection: connection options, API clients, dry run, errors.

Private to this collection. The option names and ``K8S_AUTH_*`` variables are kubernetes.core's, so
``module_defaults`` and AWX's Kubernetes credential work unchanged; check mode is the API server's dry run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
import typing as t
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.aks.workload_identity.plugins.module_utils.errors import (
    WorkloadIdentityError,
    describe_failure,
    retry,
)
from ansible_collections.aks.workload_identity.plugins.module_utils.inputs import new_module

IMPORT_ERRORS: dict[str, str] = {}

try:
    from kubernetes import client as k8s
    from kubernetes.client.rest import ApiException
    from kubernetes.config import kube_config
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.incluster_config import (
        SERVICE_CERT_FILENAME,
        SERVICE_HOST_ENV_NAME,
        SERVICE_TOKEN_FILENAME,
        InClusterConfigLoader,
    )
    from urllib3.exceptions import HTTPError as Urllib3HTTPError
except ImportError:
    IMPORT_ERRORS["kubernetes"] = traceback.format_exc()

    class _KubernetesMissing(Exception):
        """Stands in for the kubernetes client's exception classes so ``isinstance`` checks stay valid."""

    ApiException = ConfigException = Urllib3HTTPError = _KubernetesMissing
    k8s = kube_config = InClusterConfigLoader = None
    SERVICE_TOKEN_FILENAME = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    SERVICE_CERT_FILENAME = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    SERVICE_HOST_ENV_NAME = "KUBERNETES_SERVICE_HOST"

USER_AGENT = "ansible-aks.workload_identity"
DEFAULT_KUBECONFIG = "~/.kube/config"  # the kubernetes client expands "~" itself
# Where a pod finds its own service account; module attributes so tests can point them elsewhere.
IN_CLUSTER_TOKEN_FILE = SERVICE_TOKEN_FILENAME
IN_CLUSTER_CA_FILE = SERVICE_CERT_FILENAME

K8S_AUTH_ARGSPEC: dict[str, dict[str, t.Any]] = {
    # A path, or the kubeconfig itself as a dictionary (kubernetes.core accepts both).
    "kubeconfig": {"type": "raw", "fallback": (env_fallback, ["K8S_AUTH_KUBECONFIG"])},
    "context": {"type": "str", "fallback": (env_fallback, ["K8S_AUTH_CONTEXT"])},
    "host": {"type": "str", "fallback": (env_fallback, ["K8S_AUTH_HOST"])},
    "api_key": {"type": "str", "no_log": True, "fallback": (env_fallback, ["K8S_AUTH_API_KEY"])},
    "client_cert": {"type": "path", "aliases": ["cert_file"], "fallback": (env_fallback, ["K8S_AUTH_CERT_FILE"])},
    "client_key": {
        "type": "path",
        "aliases": ["key_file"],
        "no_log": False,
        "fallback": (env_fallback, ["K8S_AUTH_KEY_FILE"]),
    },
    "ca_cert": {"type": "path", "aliases": ["ssl_ca_cert"], "fallback": (env_fallback, ["K8S_AUTH_SSL_CA_CERT"])},
    "validate_certs": {"type": "bool", "aliases": ["verify_ssl"], "fallback": (env_fallback, ["K8S_AUTH_VERIFY_SSL"])},
}


def validate_connection_options(params: t.Mapping[str, t.Any]) -> list[str]:
    """ "option: rule" messages for the connection options that were given, before anything is loaded or sent."""
    errors = []
    host = params.get("host")
    if host:
        try:
            parts = urlsplit(host)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("https", "http")
            or not parts.hostname
            or parts.query
            or parts.fragment
        ):
            errors.append("host: must be the API server's URL, such as https://203.0.113.10:6443")
    kubeconfig = params.get("kubeconfig")
    if kubeconfig is not None and not isinstance(kubeconfig, (str, dict)):
        errors.append("kubeconfig: must be a path or the kubeconfig as a dictionary")
    elif isinstance(kubeconfig, str) and not kubeconfig.strip():
        errors.append("kubeconfig: must not be empty (omit the option to use its default)")
    return errors


# --- Connection settings ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class K8sConnection:
    """A kubernetes client ``Configuration`` and a sentence saying where it came from (never holds tokens)."""

    configuration: t.Any
    source: str


def build_configuration(params: t.Mapping[str, t.Any], environ: t.Mapping[str, str]) -> K8sConnection:
    """Resolve the connection like kubernetes.core, without touching the client's global default configuration.

    1. ``host`` with ``api_key`` or ``client_cert`` + ``client_key``: nothing else is read.
    2. ``kubeconfig`` (path or dictionary) and/or ``context``.
    3. ``KUBECONFIG``, then the pod's in-cluster service account, then ``~/.kube/config``. kubernetes.core tries
       in-cluster first; we let an explicit ``KUBECONFIG`` win, so a job running in a pod (AWX) reaches the
       cluster it was pointed at rather than the one it runs in.
    Explicit options (``host``, ``api_key``, certificates, ``validate_certs``) then override what was loaded.
    """
    configuration = k8s.Configuration()
    host = (params.get("host") or "").rstrip("/") or None
    kubeconfig, context = params.get("kubeconfig"), params.get("context")
    if host and (params.get("api_key") or (params.get("client_cert") and params.get("client_key"))):
        source = f"host {host}"
    elif kubeconfig or context:
        source = _load_kubeconfig(configuration, kubeconfig, context)
    elif environ.get("KUBECONFIG"):
        source = _load_kubeconfig(configuration, environ["KUBECONFIG"], None, origin="KUBECONFIG ")
    elif environ.get(SERVICE_HOST_ENV_NAME):
        source = _load_in_cluster(configuration, environ)
    else:
        source = _load_kubeconfig(configuration, DEFAULT_KUBECONFIG, None)
    _apply_overrides(configuration, params, host)
    return K8sConnection(configuration, source)


def _load_kubeconfig(configuration: t.Any, kubeconfig: t.Any, context: str | None, origin: str = "") -> str:
    where = (
        "the kubeconfig dictionary"
        if isinstance(kubeconfig, dict)
        else f"{origin}kubeconfig {kubeconfig or DEFAULT_KUBECONFIG}"
    )
    if context:
        where += f" (context {context})"
    try:
        if isinstance(kubeconfig, dict):
            kube_config.load_kube_config_from_dict(
                kubeconfig, context=context, client_configuration=configuration, persist_config=False
            )
        elif kubeconfig is None or isinstance(kubeconfig, str):
            kube_config.load_kube_config(
                config_file=kubeconfig or DEFAULT_KUBECONFIG,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        else:
            raise ConfigException(f"kubeconfig must be a path or a dictionary, got {type(kubeconfig).__name__}")
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise WorkloadIdentityError(
            describe_failure("load the Kubernetes connection from", where, "ConfigError", str(exc)),
            code="ConfigError",
            target=where,
            exception=exc,
        ) from exc
    return where


def _load_in_cluster(configuration: t.Any, environ: t.Mapping[str, str]) -> str:
    try:
        InClusterConfigLoader(
            token_filename=IN_CLUSTER_TOKEN_FILE, cert_filename=IN_CLUSTER_CA_FILE, environ=environ
        ).load_and_set(configuration)
    except (ConfigException, OSError) as exc:
        raise WorkloadIdentityError(
            describe_failure("load the in-cluster service account", None, "ConfigError", str(exc)),
            code="ConfigError",
            exception=exc,
        ) from exc
    return "the in-cluster service account"


def _apply_overrides(configuration: t.Any, params: t.Mapping[str, t.Any], host: str | None) -> None:
    if host:
        configuration.host = host
    if params.get("api_key"):
        configuration.api_key = {"authorization": params["api_key"]}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.refresh_api_key_hook = None  # an exec/in-cluster refresher would overwrite the token
    if params.get("ca_cert"):
        configuration.ssl_ca_cert = params["ca_cert"]
    if params.get("client_cert"):
        configuration.cert_file = params["client_cert"]
    if params.get("client_key"):
        configuration.key_file = params["client_key"]
    if params.get("validate_certs") is not None:
        configuration.verify_ssl = bool(params["validate_certs"])


# --- Errors -----------------------------------------------------------------------------------------------------
def k8s_error_parts(exc: BaseException) -> tuple[str | None, str, int | None]:
    """``(reason, message, status)``: the Kubernetes ``Status`` body's reason and message when there is one."""
    if isinstance(exc, ApiException):
        status = getattr(exc, "status", None)
        body: t.Any = getattr(exc, "body", None)
        try:
            document = json.loads(body) if body else None
        except (TypeError, ValueError):
            document = None
        if isinstance(document, dict) and document.get("kind") == "Status":
            return document.get("reason") or exc.reason, str(document.get("message") or exc.reason), status
        return exc.reason, str(body or exc.reason or f"HTTP {status}"), status
    if isinstance(exc, ConfigException):
        return "ConfigError", str(exc), None
    if isinstance(exc, Urllib3HTTPError):
        message = str(getattr(exc, "reason", None) or exc)
        if "CERTIFICATE_VERIFY_FAILED" in message:
            message += " (set ca_cert or K8S_AUTH_SSL_CA_CERT to the cluster's CA)"
        return "ConnectionError", message, None
    return None, str(exc), None


def k8s_error(exc: BaseException, action: str, target: str | None = None) -> WorkloadIdentityError:
    """``Failed to <action> <target>: <reason>: <message>`` with the HTTP status and traceback attached."""
    if isinstance(exc, WorkloadIdentityError):
        return exc
    code, message, status = k8s_error_parts(exc)
    return WorkloadIdentityError(
        describe_failure(action, target, code, message), code=code, status=status, target=target, exception=exc
    )


def is_k8s_not_found(exc: BaseException) -> bool:
    if isinstance(exc, WorkloadIdentityError):
        return exc.status == 404
    return isinstance(exc, ApiException) and getattr(exc, "status", None) == 404


K8S_EXCEPTIONS = (ApiException, ConfigException, Urllib3HTTPError)


def k8s_call(
    call: t.Callable[[], t.Any], action: str, target: str | None = None, *, none_if_not_found: bool = False
) -> t.Any:
    """Run one client call; its errors become a WorkloadIdentityError naming ``action`` and ``target`` (a 404
    becomes None with ``none_if_not_found``: reads)."""
    try:
        return call()
    except (ApiException, ConfigException, Urllib3HTTPError) as exc:
        if none_if_not_found and is_k8s_not_found(exc):
            return None
        raise k8s_error(exc, action, target) from exc


# --- The reconcilers' base ----------------------------------------------------------------------------------------
def throttled(exc: BaseException) -> bool:
    """Retry what client-go retries and the Python client does not: 429 or 5xx that carry a Retry-After header.

    The API server's priority and fairness answers 429 TooManyRequests with Retry-After; a 5xx with Retry-After
    (for example 503 while an aggregated API or etcd recovers) is the server asking for another attempt.
    """
    status = getattr(exc, "status", None)
    if not isinstance(status, int) or not (status == 429 or 500 <= status <= 599):
        return False
    headers = getattr(exc, "headers", None) or {}
    return any(str(key).lower() == "retry-after" for key in headers)


def status_details_kind(error: WorkloadIdentityError) -> str | None:
    """``details.kind`` of the Kubernetes ``Status`` behind an error (``namespaces`` for a missing namespace)."""
    body = getattr(error.original, "body", None)
    try:
        document = json.loads(body) if body else None
    except (TypeError, ValueError):
        return None
    details = document.get("details") if isinstance(document, dict) else None
    return details.get("kind") if isinstance(details, dict) else None


class Raced(Exception):
    """Another writer changed the object between our read and our write: read and plan again."""


class K8sApiCaller:
    """What every Kubernetes reconciler shares: one API call at a time, retried only when the server asks
    (Retry-After), errors named after the action and target; every write a server-side dry run in check mode."""

    RETRY_TIMEOUT = 60.0

    def __init__(
        self, *, dry_run: bool, retry_timeout: float | None = None, sleep: t.Callable[[float], None] = time.sleep
    ) -> None:
        self.dry_run = dry_run
        self.retry_timeout = self.RETRY_TIMEOUT if retry_timeout is None else retry_timeout
        self.sleep = sleep

    def _call(self, call: t.Callable[[], t.Any], action: str, target: str, *, none_if_not_found: bool = False) -> t.Any:
        return k8s_call(
            lambda: retry(call, should_retry=throttled, timeout=self.retry_timeout, sleep=self.sleep),
            action,
            target,
            none_if_not_found=none_if_not_found,
        )

    def _dry_run(self) -> dict[str, str]:
        return {"dry_run": "All"} if self.dry_run else {}

    def _patch_or_raced(self, patch: t.Callable[..., t.Any], action: str, target: str) -> t.Any:
        """A PATCH of an object read just before; gone since (404) means another writer raced us."""
        try:
            return self._call(lambda: patch(**self._dry_run()), action, target)
        except WorkloadIdentityError as error:
            if error.status == 404:
                raise Raced() from error
            raise

    def _delete_or_raced(
        self, delete: t.Callable[..., t.Any], uid: str | None, action: str, target: str, **extra: t.Any
    ) -> None:
        """A DELETE that never removes an object recreated since our read (uid precondition); gone already (404)
        or recreated (409) means another writer raced us. ``extra`` goes into DeleteOptions."""
        options = delete_options(self.dry_run, **({"preconditions": {"uid": uid}} if uid else {}), **extra)
        try:
            self._call(lambda: delete(body=options, **self._dry_run()), action, target)
        except WorkloadIdentityError as error:
            if error.status in (404, 409):
                raise Raced() from error
            raise


# --- The module base --------------------------------------------------------------------------------------------
def delete_options(dry_run: bool, **options: t.Any) -> dict[str, t.Any]:
    """A DeleteOptions body. The API server ignores query parameters when a DELETE carries a body, so in check
    mode ``dryRun`` must be in the body too: with only ``?dryRun=All`` such a delete really deletes."""
    body: dict[str, t.Any] = {"apiVersion": "v1", "kind": "DeleteOptions", **options}
    if dry_run:
        body["dryRun"] = ["All"]
    return body


class K8sModule:
    """An ``AnsibleModule`` with kubernetes.core's connection options and lazily built API clients.

    Pass ``module=`` to share one ``AnsibleModule`` with an ``AzureModule`` (its argument spec must then
    include ``K8S_AUTH_ARGSPEC``). Nothing talks to the API server until a client is first used.
    """

    def __init__(
        self,
        argument_spec: dict[str, dict[str, t.Any]] | None = None,
        *,
        module: AnsibleModule | None = None,
        supports_check_mode: bool = True,
        environ: t.Mapping[str, str] | None = None,
        **module_kwargs: t.Any,
    ) -> None:
        if module is None:
            module = new_module(
                K8S_AUTH_ARGSPEC | (argument_spec or {}),
                supports_check_mode=supports_check_mode,
                **module_kwargs,
            )
        elif not set(K8S_AUTH_ARGSPEC) <= set(module.argument_spec):
            module.fail_json(msg="Internal error: the module's argument_spec lacks K8S_AUTH_ARGSPEC")
        self.module = module
        self.require("kubernetes")
        errors = validate_connection_options(module.params)
        if errors:
            module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors)
        self._environ = environ
        self._connection: K8sConnection | None = None
        self._clients: dict[str, t.Any] = {}

    @property
    def params(self) -> dict[str, t.Any]:
        return self.module.params

    @property
    def check_mode(self) -> bool:
        return self.module.check_mode

    @property
    def dry_run(self) -> str | None:
        """``"All"`` in check mode: writes go to the API server as a server-side dry run (as kubernetes.core)."""
        return "All" if self.module.check_mode else None

    def dry_run_kwargs(self) -> dict[str, str]:
        return {"dry_run": "All"} if self.module.check_mode else {}

    def delete_options(self, **options: t.Any) -> dict[str, t.Any]:
        """The DeleteOptions body for a delete; see ``delete_options``."""
        return delete_options(self.module.check_mode, **options)

    def require(self, package: str) -> None:
        if package in IMPORT_ERRORS:
            self.module.fail_json(msg=missing_required_lib(package), exception=IMPORT_ERRORS[package])

    def fail(self, exc: BaseException, action: str = "run the module") -> t.NoReturn:
        error = exc if isinstance(exc, WorkloadIdentityError) else k8s_error(exc, action)
        self.module.fail_json(**error.to_fail_kwargs(redact=[self.params.get("api_key")]))

    @property
    def connection(self) -> K8sConnection:
        if self._connection is None:
            self._connection = build_configuration(
                self.params, self._environ if self._environ is not None else os.environ
            )
        return self._connection

    @property
    def configuration(self) -> t.Any:
        return self.connection.configuration

    @property
    def api_client(self) -> t.Any:
        if "api_client" not in self._clients:
            api_client = k8s.ApiClient(self.configuration)
            api_client.user_agent = USER_AGENT
            self._clients["api_client"] = api_client
        return self._clients["api_client"]

    def _api(self, name: str) -> t.Any:
        if name not in self._clients:
            self._clients[name] = getattr(k8s, name)(self.api_client)
        return self._clients[name]

    @property
    def core_v1(self) -> t.Any:
        return self._api("CoreV1Api")

    @property
    def apps_v1(self) -> t.Any:
        return self._api("AppsV1Api")

    @property
    def batch_v1(self) -> t.Any:
        return self._api("BatchV1Api")

    @property
    def rbac_v1(self) -> t.Any:
        return self._api("RbacAuthorizationV1Api")

    @property
    def authentication_v1(self) -> t.Any:
        return self._api("AuthenticationV1Api")

    @property
    def authorization_v1(self) -> t.Any:
        return self._api("AuthorizationV1Api")
