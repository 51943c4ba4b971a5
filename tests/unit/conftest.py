"""Shared fixtures for the module_utils unit tests: a clean environment, module arguments, local HTTP(S) servers."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import json
import os
import ssl
import threading
import typing as t
from pathlib import Path

import pytest

# Variables that would leak the developer's or CI's own settings into option resolution.
_ENV_PREFIXES = ("AZURE_", "K8S_AUTH_", "ANSIBLE_AZURE_")
_ENV_NAMES = ("REQUESTS_CA_BUNDLE", "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES) or name in _ENV_NAMES:
            monkeypatch.delenv(name)


@contextlib.contextmanager
def module_args(args: dict[str, t.Any]) -> t.Iterator[None]:
    """Expose ``args`` to AnsibleModule instances created inside the block (any ansible-core >= 2.16)."""
    try:
        from ansible.module_utils.testing import patch_module_args
    except ImportError:  # ansible-core < 2.19
        from unittest import mock

        from ansible.module_utils import basic

        payload = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
        with mock.patch.object(basic, "_ANSIBLE_ARGS", payload):
            yield
        return
    with patch_module_args(args):
        yield


def failure(capsys: pytest.CaptureFixture[str], call: t.Callable[[], t.Any]) -> dict[str, t.Any]:
    """Run ``call`` (which ends in fail_json) and return the JSON result the module printed."""
    with pytest.raises(SystemExit):
        call()
    return json.loads(capsys.readouterr().out)


class Pager:
    """An azure-core ``ItemPaged`` stand-in for fake SDK clients: iterable, and ``by_page()`` gives the pages
    (each one request to the service)."""

    def __init__(self, items: t.Iterable[t.Any], page_size: int | None = None) -> None:
        self.items = list(items)
        self.page_size = page_size or max(1, len(self.items))

    def __iter__(self) -> t.Iterator[t.Any]:
        return iter(self.items)

    def by_page(self) -> t.Iterator[t.Iterator[t.Any]]:
        if not self.items:
            return iter([iter([])])
        return iter(iter(self.items[i : i + self.page_size]) for i in range(0, len(self.items), self.page_size))


class RawResponse(t.NamedTuple):
    """What a kubernetes client method returns with ``_preload_content=False``: the body, unparsed."""

    data: bytes
    status: int = 200


def kube_answer(model: t.Any, preload: bool = True) -> t.Any:
    """A fake kubernetes client's answer: the model, or (``_preload_content=False``) its JSON as the API server
    sends it (camelCase), as the real client does."""
    if preload:
        return model
    from kubernetes import client as k8s

    return RawResponse(json.dumps(k8s.ApiClient().sanitize_for_serialization(model)).encode())


# --- A local HTTP(S) server --------------------------------------------------------------------------------
Route = t.Callable[["Request"], tuple[int, dict[str, str], bytes]]


class Request(t.NamedTuple):
    """One request the server received; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class LocalServer:
    """A threaded http.server on 127.0.0.1 answering from ``routes`` (path prefix -> handler); records requests."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                headers = {key.lower(): value for key, value in self.headers.items()}
                request = Request(self.command, self.path, headers, self.rfile.read(length))
                server.requests.append(request)
                for prefix, route in sorted(server.routes.items(), key=lambda item: -len(item[0])):
                    if self.path.startswith(prefix):
                        status, headers, body = route(request)
                        break
                else:
                    status, headers, body = 599, {}, b"no route"
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

            def log_message(self, *args: t.Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def json_route(
        self, prefix: str, document: t.Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(document).encode()
        self.routes[prefix] = lambda _request: (status, {"Content-Type": "application/json", **(headers or {})}, body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server() -> t.Iterator[LocalServer]:
    server = LocalServer()
    yield server
    server.close()


class Pki(t.NamedTuple):
    ca_file: Path
    server_context: ssl.SSLContext


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit-test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return Pki(ca_file, context)


@pytest.fixture
def https_server(pki: Pki) -> t.Iterator[LocalServer]:
    server = LocalServer(tls=pki.server_context)
    yield server
    server.close()
