"""The project's benchmark: how many API requests the flows make, per workload, on the lab.

    python -m tests.bench [--workloads N] [--workdir DIR]      (make bench)

It sets up N workloads with site.yml (identity, ServiceAccount, federated credential, a Reader grant, Key Vault
access, verification with a real token exchange and a secret read), runs it again (nothing to do), then the
audit playbook, and counts the requests the Azure emulator and the kube-apiserver (its audit log) received, by
kind. Requests are what a flow costs against real Azure (throttling limits, latency), so they are the figure to
watch; wall time on a shared machine is printed but is not a test. Results go to stdout and to
.build/bench/<timestamp>.json. The workloads are removed again with the teardown playbook.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import COLLECTIONS, REPO
from tests.lab import lab as lab_module
from tests.lab.kube import controlplane

NAMESPACE = "bench"
# /subscriptions/<id>/resourceGroups/<rg>/providers/<Namespace>/<type>/<name>/<child type>/...: the types, lower
_ARM_TYPE = re.compile(r"/providers/([^/]+)/([^/]+)(?:/[^/]+/([^/?]+))?", re.IGNORECASE)


def workloads(count: int) -> list[dict[str, Any]]:
    scope = "/subscriptions/{{ lookup('ansible.builtin.env', 'AZURE_SUBSCRIPTION_ID') }}/resourceGroups/rg-wid-lab"
    return [
        {
            "name": f"bench-{index:03d}",
            "namespace": NAMESPACE,
            "create_namespace": True,
            "service_account": f"bench-{index:03d}",
            "identity": {"name": f"id-bench-{index:03d}", "resource_group": "rg-wid-lab"},
            "grants": [{"role": "Reader", "scope": scope}],
        }
        for index in range(count)
    ]


def arm_kind(request: dict[str, Any]) -> str:
    path = request["path"].split("?")[0]
    if request["plane"] != "arm":
        return request["plane"]
    found = _ARM_TYPE.search(path)
    if not found:
        return "resourceGroups" if "/resourcegroups/" in path.lower() else path.rsplit("/", 1)[-1] or "/"
    namespace, kind, child = found.groups()
    return f"{namespace.split('.')[-1]}/{kind}" + (f"/{child}" if child else "")


def kube_kind(event: dict[str, Any]) -> str:
    path = event["uri"].split("?")[0]
    parts = [p for p in path.split("/") if p]
    # /api/v1/namespaces/<ns>/<resource>[/<name>[/<sub>]] or /apis/<group>/<version>/...
    parts = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if parts[:1] == ["namespaces"] and len(parts) >= 3:
        parts = parts[2:]
    resource = parts[0] if parts else "/"
    sub = f"/{parts[2]}" if len(parts) >= 3 else ""
    return resource + sub


def count(lab: lab_module.Lab, since: tuple[int, int]) -> dict[str, Any]:
    arm = [r for r in lab.requests(since[0]) if not r["path"].startswith("/_lab")]
    kube = controlplane.audit_requests(lab.workdir / "kube", since[1])
    by_arm = collections.Counter(f"{r['method']} {arm_kind(r)}" for r in arm)
    by_kube = collections.Counter(f"{e['verb']} {kube_kind(e)}" for e in kube)
    return {
        "azure_requests": len(arm),
        "kubernetes_requests": len(kube),
        "azure": dict(sorted(by_arm.items())),
        "kubernetes": dict(sorted(by_kube.items())),
    }


def run_playbook(lab: lab_module.Lab, playbook: str, extra_vars: Path, *args: str) -> float:
    env = {**os.environ, **lab.env, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "ANSIBLE_NOCOLOR": "1"}
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        f"aks.workload_identity.{playbook}",
        "-e",
        f"@{REPO / 'playbooks' / 'vars' / 'lab.yml'}",
        "-e",
        f"@{extra_vars}",
        *args,
    ]
    started = time.monotonic()
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"{playbook} failed:\n{completed.stdout[-6000:]}\n{completed.stderr[-3000:]}")
    return time.monotonic() - started


def measure(lab: lab_module.Lab, playbook: str, extra_vars: Path, *args: str) -> dict[str, Any]:
    marks = (lab.last_seq(), controlplane.audit_mark(lab.workdir / "kube"))
    seconds = run_playbook(lab, playbook, extra_vars, *args)
    return {"seconds": round(seconds, 1), **count(lab, marks)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--workloads", type=int, default=10)
    parser.add_argument("--workdir", type=Path, help="an existing lab to use (python -m tests.lab up --workdir DIR)")
    options = parser.parse_args(argv)
    own_lab = options.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="wid-bench-")) if own_lab else options.workdir
    lab = lab_module.up(workdir, quiet=True)
    results: dict[str, Any] = {"workloads": options.workloads}
    try:
        with tempfile.TemporaryDirectory(prefix="wid-bench-vars-") as tmp:
            extra = Path(tmp) / "bench.yml"
            audit_dir = Path(tmp) / "audit"
            extra.write_text(
                yaml.safe_dump(
                    {
                        "workload_items": workloads(options.workloads),
                        "audit_output_dir": str(audit_dir),
                        "verify_pod_proof": False,
                    }
                )
            )
            results["site_first_run"] = measure(lab, "site", extra)
            results["site_second_run"] = measure(lab, "site", extra)
            results["audit"] = measure(lab, "audit", extra)
            results["teardown"] = measure(lab, "teardown", extra)
    finally:
        if own_lab:
            lab_module.down(workdir)
    report(results)
    out = REPO / ".build" / "bench" / time.strftime("%Y%m%dT%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")
    return 0


def report(results: dict[str, Any]) -> None:
    count_ = results["workloads"]
    print(f"{'run':<18} {'seconds':>8} {'Azure':>7} {'/wl':>6} {'Kubernetes':>11} {'/wl':>6}")
    for name in ("site_first_run", "site_second_run", "audit", "teardown"):
        run = results[name]
        print(
            f"{name:<18} {run['seconds']:>8} {run['azure_requests']:>7} {run['azure_requests'] / count_:>6.1f} "
            f"{run['kubernetes_requests']:>11} {run['kubernetes_requests'] / count_:>6.1f}"
        )
    for name in ("site_second_run", "audit"):
        print(f"\n{name}, by kind of request:")
        for kind, number in {**results[name]["azure"], **results[name]["kubernetes"]}.items():
            print(f"  {number:>5}  {kind}")


if __name__ == "__main__":
    sys.exit(main())
