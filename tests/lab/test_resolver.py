"""The lab's loopback names work in every Python process it starts, whatever the host's resolver does."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.lab.lab import RESOLVER
from tests.lab.resolver.sitecustomize import is_localhost_name

PROBE = """
import socket, sys
for name in sys.argv[1:]:
    try:
        print(name, socket.getaddrinfo(name, 443, proto=socket.IPPROTO_TCP)[0][4][0])
    except socket.gaierror:
        print(name, "unresolved")
"""


def _resolve(*names: str, pythonpath: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    out = subprocess.run([sys.executable, "-c", PROBE, *names], env=env, capture_output=True, text=True, check=True)
    return dict(line.split(" ", 1) for line in out.stdout.splitlines())


def test_names_under_localhost_are_loopback_in_a_process_started_with_the_lab_env():
    found = _resolve("kv-wid-rbac.vault.localhost", "KV.Vault.LOCALHOST.", "name.invalid", pythonpath=str(RESOLVER))
    assert found == {
        "kv-wid-rbac.vault.localhost": "127.0.0.1",
        "KV.Vault.LOCALHOST.": "127.0.0.1",
        "name.invalid": "unresolved",  # any other name still goes to the host's resolver
    }


def test_a_sitecustomize_that_was_there_before_still_runs(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import os\nos.environ['EARLIER_SITECUSTOMIZE'] = 'ran'\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RESOLVER), str(tmp_path)])}
    code = "import os, socket; print(os.environ.get('EARLIER_SITECUSTOMIZE'), socket.getaddrinfo('a.localhost', 1)[0][4][0])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ran", "127.0.0.1"]


def test_which_names_are_localhost_names():
    assert all(map(is_localhost_name, ["localhost", "a.localhost", "a.b.LOCALHOST.", b"x.localhost"]))
    assert not any(map(is_localhost_name, ["localhost.example", "notlocalhost", "a.localhost.com", None, 1, b"\xff"]))
