"""Run a module of the collection inside the test process against the lab, and count what it sent.

For input checks: hundreds of bad values, each of which must be refused before the first request, would take
minutes as ansible-playbook runs. The module's own main() runs here exactly as Ansible's module runner calls it
(parameters as JSON, the result printed as JSON, sys.exit), with the lab's settings in the environment; the
emulator's request log and the kube-apiserver's audit log say what reached Azure and Kubernetes.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any

from tests.unit.conftest import module_args

COLLECTION = "ansible_collections.aks.workload_identity.plugins.modules"


@dataclass
class Probed:
    result: dict[str, Any]
    azure: list[dict[str, Any]] = field(default_factory=list)  # every request to the emulator, tokens included
    kube: list[dict[str, Any]] = field(default_factory=list)  # every request of the lab admin to the apiserver

    @property
    def failed(self) -> bool:
        return bool(self.result.get("failed"))

    @property
    def msg(self) -> str:
        return str(self.result.get("msg", ""))

    @property
    def requests(self) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in self.azure] + [f"{k['verb']} {k['uri']}" for k in self.kube]

    @property
    def writes(self) -> list[str]:
        azure = [
            r
            for r in self.azure
            if r["method"] in ("PUT", "PATCH", "POST", "DELETE") and r["plane"] in ("arm", "vault")
        ]
        kube = [k for k in self.kube if k["verb"] not in ("get", "list", "watch") and not k["dry_run"]]
        return [f"{r['method']} {r['path']}" for r in azure] + [f"{k['verb']} {k['uri']}" for k in kube]


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("AZURE_", "K8S_AUTH_", "ANSIBLE_AZURE_")) or name in ("KUBECONFIG", "REQUESTS_CA_BUNDLE"):
            del os.environ[name]
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_inprocess(lab: Any, module: str, args: dict[str, Any], *, check: bool = False) -> Probed:
    """Run ``aks.workload_identity.<module>`` with ``args``; its result and every request it made."""
    main = importlib.import_module(f"{COLLECTION}.{module}").main
    parameters = {**args, "_ansible_check_mode": check}
    azure_mark, kube_mark = lab.last_seq(), lab.kube_mark()
    out = io.StringIO()
    # exit_json and fail_json end the module with SystemExit, as they end a module process
    with (
        _environment(lab.env),
        module_args(parameters),
        contextlib.redirect_stdout(out),
        contextlib.suppress(SystemExit),
    ):
        main()
    text = out.getvalue()
    try:
        result = json.loads(text)
    except ValueError:
        result = {"failed": True, "msg": f"the module printed no JSON result: {text[-500:]!r}"}
    return Probed(result, lab.requests(azure_mark), lab.kube_requests(kube_mark))
