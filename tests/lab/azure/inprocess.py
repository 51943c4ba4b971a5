"""Run the emulator inside the test process (a thread), for tests of the emulator itself.

The full lab (emulator + kube-apiserver as detached processes) is tests/lab/lab.py; this is the light variant.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from azure.core.credentials import AccessToken
from azure.identity import ClientAssertionCredential

from .. import pki
from .app import build_server
from .seed import make_seed
from .server import EmulatorServer


@dataclass
class RunningEmulator:
    server: EmulatorServer
    base_url: str  # https://127.0.0.1:<port>
    ca_file: Path
    seed: dict[str, Any]

    @property
    def state(self):
        return self.server.state

    @property
    def config(self):
        return self.server.state.config

    def vault_url(self, name: str) -> str:
        return f"https://{name}.{self.config.vault_dns_suffix}/"

    def token(self, audience: str | None = None, oid: str | None = None) -> str:
        """An access token as the emulated Entra issues it: the deployer's for ARM by default, or for ``audience``,
        or another principal's (``oid``, with an application ID of its own)."""
        seed = self.seed
        token, _lifetime = self.state.tokens.issue(
            audience=audience or self.config.arm_audience,
            oid=oid or seed["deployer_object_id"],
            appid=seed["deployer_client_id"] if oid is None else str(uuid.uuid4()),
        )
        return token

    def session(self, token: str | None = None) -> requests.Session:
        """Raw HTTPS with the lab CA (trust_env off, so REQUESTS_CA_BUNDLE or a proxy cannot interfere), bearing
        ``token``; without one, anonymous."""
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.ca_file)
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        return session

    def exchange(self, client_id: str, assertion: str, scope: str) -> AccessToken:
        """A federated token exchange at the emulated Entra, through azure-identity as a workload makes it."""
        credential = ClientAssertionCredential(
            self.config.tenant_id,
            client_id,
            lambda: assertion,
            authority=self.base_url,
            disable_instance_discovery=True,
            connection_verify=str(self.ca_file),
        )
        return credential.get_token(scope)


@contextmanager
def running_emulator(workdir: Path, **config: Any) -> Iterator[RunningEmulator]:
    """Start the emulator on a free loopback port; ``config`` overrides LabConfig fields (e.g. kube_issuer_url)."""
    ca = pki.create_ca(workdir / "pki")
    tls = pki.issue(
        ca,
        workdir / "pki",
        "emulator",
        "aks-wid-lab-emulator",
        dns_names=("localhost", "*.localhost", "*.vault.localhost"),
        ip_addresses=("127.0.0.1", "::1"),
    )
    seed = make_seed(config.pop("seed", None))
    # Bind first to learn the port: the vault suffix and base URL carry it.
    settings: dict[str, Any] = {
        "cert": str(tls.cert),
        "key": str(tls.key),
        "port": 0,
        "base_url": "https://127.0.0.1:0",
        "vault_dns_suffix": "vault.localhost:0",
        "seed": seed,
        "ca_file": str(ca.cert),
        **config,
    }
    server = build_server(settings)
    port = server.server_address[1]
    server.state.config.base_url = f"https://127.0.0.1:{port}"
    server.state.config.vault_dns_suffix = f"vault.localhost:{port}"
    server.state.reset()  # re-seed with the real port in every URL
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield RunningEmulator(server, f"https://127.0.0.1:{port}", ca.cert, seed)
    finally:
        server.shutdown()
        server.server_close()
