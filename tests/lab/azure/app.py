"""Assemble the emulator: state + every route module + TLS."""

from __future__ import annotations

import importlib
import ssl
from typing import Any

from .server import EmulatorServer
from .state import LabConfig, State

# Importing a route module registers its routes and seeders; the order is irrelevant (seeders carry theirs).
ROUTE_MODULES = ("arm", "aks", "identity_binding", "msi", "authorization", "keyvault", "entra", "oidc")


def build_server(settings: dict[str, Any]) -> EmulatorServer:
    for name in ROUTE_MODULES:
        importlib.import_module(f"{__package__}.{name}")
    fields = set(LabConfig.__dataclass_fields__)
    config = LabConfig(**{k: v for k, v in settings.items() if k in fields})
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load_cert_chain(settings["cert"], settings["key"])
    return EmulatorServer((settings.get("host", "127.0.0.1"), int(settings.get("port", 0))), State(config), tls)
