"""Loopback names for the lab's Python processes, without the host's resolver.

The lab's Key Vaults answer, as Azure's do, on a host per vault (``<vault>.vault.localhost:<port>``, where Azure has
``<vault>.vault.azure.net``). RFC 6761 section 6.3 says name resolution APIs should answer every name under
``localhost.`` with the loopback address themselves, without asking a resolver; systemd-resolved and glibc's
nss-myhostname do, a bare Debian or Ubuntu machine does not. The lab's environment (``lab.env``) puts this folder
on PYTHONPATH, so every Python process started with it (ansible-playbook, its modules, the Azure CLI, the SDK
clients of the tests) resolves those names to 127.0.0.1 here, and nothing on the host changes. Any other name
goes to the host's resolver as before. Python runs the ``sitecustomize`` module it finds first at start-up; one
that was there before this folder came first (a distribution's) is run too.

Self-contained: it runs before the repository is importable.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import socket
import sys

LOOPBACK = "127.0.0.1"


def is_localhost_name(host: object) -> bool:
    """``localhost`` and any name under it (RFC 6761 section 6.3), in any case, with or without the final dot."""
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str):
        return False
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def install() -> None:
    """Answer localhost names with the loopback address in this process (once; idempotent)."""
    if getattr(socket.getaddrinfo, "_lab_loopback", False):
        return
    original = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # socket.getaddrinfo(host, port, family, type, proto, flags)
        family = args[1] if len(args) > 1 else kwargs.get("family", 0)
        if is_localhost_name(host) and family in (0, socket.AF_UNSPEC, socket.AF_INET):
            host = LOOPBACK
        return original(host, *args, **kwargs)

    getaddrinfo._lab_loopback = True  # type: ignore[attr-defined]
    socket.getaddrinfo = getaddrinfo


def _run_the_next_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    others = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is None or spec.loader is None or spec.origin == __file__:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


install()
if __name__ == "sitecustomize":
    _run_the_next_sitecustomize()
