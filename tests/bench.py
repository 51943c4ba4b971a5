"""The project's benchmark: what the workload playbook costs for N workloads, on a lab of its own.

    python -m tests.bench [--sizes 1,10,50] [--big] [--latency 0.1] [--readme]        (make bench)

The lab's Azure emulator adds ``--latency`` seconds (default 0.1, the round trip to management.azure.com) to every
Azure Resource Manager request. For each N it runs the ``workload`` playbook for N workloads (each its own
identity, a ServiceAccount in one namespace, a federated credential, a Reader grant) from scratch, then again with
nothing to do, and records the wall time, the module processes Ansible started (a callback counts them), and the
requests the emulator (ARM, Entra ID) and the kube-apiserver (its audit log, reads included) received, by kind.
Then N=50 once more from scratch with the lab's model of Azure's documented throttling on, beside the floor those
limits impose (2 managed identity writes per second per subscription: an identity and a credential per workload).

Requests are exact and tests assert them; wall time on a shared 2-core machine is noisy, so no test asserts it.
Results go to .build/bench/ (JSON) and, with --readme, into docs/bench.md, docs/bench.svg and the README table.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
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

CALLBACKS = REPO / "tests" / "bench_plugins" / "callback"
# /subscriptions/<id>/resourceGroups/<rg>/providers/<Namespace>/<type>/<name>/<child type>/...: the types, lower
_ARM_TYPE = re.compile(r"/providers/([^/]+)/([^/]+)(?:/[^/]+/([^/?]+))?", re.IGNORECASE)
THROTTLED_SIZE = 50
BOUND_SIZE = 50  # ServiceAccounts sharing one identity through one identity binding
ONBOARDING_SIZE = 50  # self-service requests: 5 namespaces, 10 identities of 5 ServiceAccounts each
MSI_WRITES_PER_SECOND = (
    2.0  # per subscription (learn.microsoft.com/entra/workload-id/workload-identity-federation-considerations)
)
MSI_WRITE_BURST = 2  # the lab's bucket holds one second's worth


def workloads(tag: str, count: int, subscription: str) -> list[dict[str, Any]]:
    scope = f"/subscriptions/{subscription}/resourceGroups/rg-wid-lab"
    return [
        {
            "name": f"{tag}-{index:03d}",
            "namespace": tag,
            "create_namespace": True,
            "service_account": f"{tag}-{index:03d}",
            "identity": {"name": f"id-{tag}-{index:03d}", "resource_group": "rg-wid-lab"},
            "grants": [{"role": "Reader", "scope": scope}],
        }
        for index in range(count)
    ]


def bound_workloads(tag: str, count: int, namespaces: int = 5) -> list[dict[str, Any]]:
    """``count`` ServiceAccounts in ``namespaces`` namespaces on one identity through its identity binding."""
    return [
        {
            "name": f"{tag}-{index:03d}",
            "namespace": f"{tag}-{index % namespaces}",
            "create_namespace": True,
            "service_account": f"{tag}-{index:03d}",
            "federation": "identity_binding",
            "identity": {"name": f"id-{tag}", "resource_group": "rg-wid-lab"},
        }
        for index in range(count)
    ]


def plant_requests(lab: lab_module.Lab, tag: str, count: int, subscription: str) -> dict[str, Any]:
    """``count`` ServiceAccounts annotated with onboarding requests in 5 namespaces (the application teams' side,
    written with the kubernetes client), and the onboard playbook's variables that allow them."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    core = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig)))
    namespaces = [f"{tag}-{index}" for index in range(5)]
    for namespace in namespaces:
        core.create_namespace({"metadata": {"name": namespace}})
    for index in range(count):
        annotations = {
            "aks.workload-identity/request-identity": f"id-{tag}-{index % 10}",
            "aks.workload-identity/request-grants": "Reader@lab-group",
        }
        body = {"metadata": {"name": f"app-{index:03d}", "annotations": annotations}}
        core.create_namespaced_service_account(namespaces[index % 5], body)
    return {
        "onboarding_registry_namespace": f"{tag}-registry",
        "onboarding_policy": {
            "identity_resource_group": "rg-wid-lab",
            "scopes": {"lab-group": f"/subscriptions/{subscription}/resourceGroups/rg-wid-lab"},
            "namespaces": {ns: {"identities": [f"id-{tag}-*"], "grants": ["Reader@lab-group"]} for ns in namespaces},
        },
    }


def arm_kind(request: dict[str, Any]) -> str:
    path = request["path"].split("?")[0]
    found = _ARM_TYPE.search(path)
    if not found:
        return "resourceGroups" if "/resourcegroups/" in path.lower() else path.rsplit("/", 1)[-1] or "/"
    namespace, kind, child = found.groups()
    return f"{namespace.split('.')[-1]}/{kind}" + (f"/{child}" if child else "")


def kube_kind(event: dict[str, Any]) -> str:
    parts = [p for p in event["uri"].split("?")[0].split("/") if p]
    # /api/v1/namespaces/<ns>/<resource>[/<name>[/<sub>]] or /apis/<group>/<version>/...
    parts = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if parts[:1] == ["namespaces"] and len(parts) >= 3:
        parts = parts[2:]
    resource = parts[0] if parts else "/"
    return resource + (f"/{parts[2]}" if len(parts) >= 3 else "")


def count(lab: lab_module.Lab, since: tuple[int, int]) -> dict[str, Any]:
    requests = [r for r in lab.requests(since[0]) if not r["path"].startswith("/_lab")]
    arm = [r for r in requests if r["plane"] == "arm"]
    entra_tokens = [r for r in requests if r["plane"] == "entra" and r["method"] == "POST"]
    kube = [
        e for e in controlplane.audit_requests(lab.workdir / "kube", since[1]) if e.get("user") != "system:apiserver"
    ]
    return {
        "arm_requests": len(arm),
        "entra_token_requests": len(entra_tokens),
        "entra_requests": len([r for r in requests if r["plane"] == "entra"]),
        "kubernetes_requests": len(kube),
        "throttled": len([r for r in requests if r.get("throttled")]),
        "arm": dict(sorted(collections.Counter(f"{r['method']} {arm_kind(r)}" for r in arm).items())),
        "kubernetes": dict(sorted(collections.Counter(f"{e['verb']} {kube_kind(e)}" for e in kube).items())),
    }


def run_playbook(lab: lab_module.Lab, playbook: str, extra_vars: Path, modules_file: Path) -> float:
    env = {
        **os.environ,
        **lab.env,
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
        "ANSIBLE_CALLBACKS_ENABLED": "count_modules",
        "WID_BENCH_MODULE_COUNT": str(modules_file),
    }
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        f"aks.workload_identity.{playbook}",
        "-e",
        f"@{REPO / 'playbooks' / 'vars' / 'lab.yml'}",
        "-e",
        f"@{extra_vars}",
    ]
    started = time.monotonic()
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if completed.returncode != 0:
        raise SystemExit(f"{playbook} failed:\n{completed.stdout[-6000:]}\n{completed.stderr[-3000:]}")
    return elapsed


def measure(lab: lab_module.Lab, playbook: str, extra_vars: Path) -> dict[str, Any]:
    modules_file = extra_vars.with_suffix(".modules.json")
    marks = (lab.last_seq(), controlplane.audit_mark(lab.workdir / "kube"))
    seconds = run_playbook(lab, playbook, extra_vars, modules_file)
    modules = json.loads(modules_file.read_text()) if modules_file.exists() else {}
    return {
        "seconds": round(seconds, 2),
        "module_processes": sum(modules.values()),
        "modules": modules,
        **count(lab, marks),
    }


def vars_file(folder: Path, name: str, values: dict[str, Any]) -> Path:
    path = folder / f"{name}.yml"
    path.write_text(yaml.safe_dump(values))
    return path


def throttling_floor(count_: int) -> float:
    """Seconds Azure's managed identity limits impose on N workloads from scratch: an identity and a federated
    credential each, 2 writes per second per subscription after a burst of 2."""
    writes = 2 * count_
    return max(0.0, (writes - MSI_WRITE_BURST) / MSI_WRITES_PER_SECOND)


def bench(
    lab: lab_module.Lab,
    sizes: list[int],
    latency: float,
    throttled: bool,
    folder: Path,
    bound: bool = True,
    onboarding: bool = True,
) -> dict[str, Any]:
    subscription = lab.env["AZURE_SUBSCRIPTION_ID"]
    # The issuer first (not measured): the workload playbook reads it from the cluster.
    run_playbook(lab, "cluster", vars_file(folder, "cluster", {}), folder / "cluster.modules.json")
    lab.settings(arm_latency_seconds=latency)
    runs: list[dict[str, Any]] = []
    try:
        for size in sizes:
            tag = f"bench{size}"
            values = vars_file(folder, tag, {"workload_items": workloads(tag, size, subscription)})
            scratch = measure(lab, "workload", values)
            noop = measure(lab, "workload", values)
            runs.append({"workloads": size, "from_scratch": scratch, "no_op": noop})
            print(
                f"N={size:<4} from scratch {scratch['seconds']:>6.1f} s   no-op {noop['seconds']:>5.1f} s", flush=True
            )
        results: dict[str, Any] = {"latency_seconds": latency, "runs": runs}
        if bound:
            tag = f"ib{BOUND_SIZE}"
            values = vars_file(folder, tag, {"workload_items": bound_workloads(tag, BOUND_SIZE)})
            scratch = measure(lab, "workload", values)
            noop = measure(lab, "workload", values)
            results["bound"] = {"workloads": BOUND_SIZE, "from_scratch": scratch, "no_op": noop}
            print(
                f"N={BOUND_SIZE} bound to one identity: from scratch {scratch['seconds']:.1f} s, no-op "
                f"{noop['seconds']:.1f} s",
                flush=True,
            )
        if onboarding:
            tag = f"onb{ONBOARDING_SIZE}"
            values = vars_file(folder, tag, plant_requests(lab, tag, ONBOARDING_SIZE, subscription))
            scratch = measure(lab, "onboard", values)
            noop = measure(lab, "onboard", values)
            results["onboarding"] = {"requests": ONBOARDING_SIZE, "from_scratch": scratch, "no_op": noop}
            print(
                f"N={ONBOARDING_SIZE} onboarding requests: from scratch {scratch['seconds']:.1f} s, no-op "
                f"{noop['seconds']:.1f} s",
                flush=True,
            )
        if throttled:
            tag = f"thr{THROTTLED_SIZE}"
            values = vars_file(folder, tag, {"workload_items": workloads(tag, THROTTLED_SIZE, subscription)})
            lab.settings(throttling=1)
            try:
                run = measure(lab, "workload", values)
            finally:
                lab.settings(throttling=0)
            floor = throttling_floor(THROTTLED_SIZE)
            results["throttled"] = {"workloads": THROTTLED_SIZE, "floor_seconds": floor, **run}
            print(f"N={THROTTLED_SIZE} throttled from scratch {run['seconds']:.1f} s (floor {floor:.0f} s)", flush=True)
        return results
    finally:
        lab.settings(arm_latency_seconds=0, throttling=0)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d"),
    }


def scratch_and_noop(title: str, run: dict[str, Any]) -> list[str]:
    """A run's two rows (from scratch, no-op) under ``title``, then its no-op requests by kind."""
    lines = [
        "",
        title,
        "",
        "| run | wall time | ARM requests | Entra token requests | Kubernetes requests |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, key in (("from scratch", "from_scratch"), ("no-op", "no_op")):
        r = run[key]
        lines.append(
            f"| {label} | {r['seconds']:.1f} s | {r['arm_requests']} | {r['entra_token_requests']} "
            f"| {r['kubernetes_requests']} |"
        )
    lines += ["", "Requests of its no-op run, by kind:", ""]
    return lines + [f"- `{kind}`: {n}" for kind, n in {**run["no_op"]["arm"], **run["no_op"]["kubernetes"]}.items()]


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Measured {results['machine']['date']} on {results['machine']['cpus']} CPUs ({results['machine']['system']}), "
        f"{results['latency_seconds'] * 1000:.0f} ms added to every ARM request.",
        "",
        "| N | run | wall time | module processes | ARM requests | Entra token requests | Kubernetes requests |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in results["runs"]:
        for label, key in (("from scratch", "from_scratch"), ("no-op", "no_op")):
            r = run[key]
            lines.append(
                f"| {run['workloads']} | {label} | {r['seconds']:.1f} s | {r['module_processes']} | {r['arm_requests']} "
                f"| {r['entra_token_requests']} | {r['kubernetes_requests']} |"
            )
    throttled = results.get("throttled")
    if throttled:
        ratio = throttled["seconds"] / throttled["floor_seconds"] if throttled["floor_seconds"] else 0
        lines += [
            "",
            f"With the lab's model of Azure's managed identity limits on, N={throttled['workloads']} from scratch took "
            f"{throttled['seconds']:.1f} s against a floor of {throttled['floor_seconds']:.0f} s ({ratio:.2f}x; "
            f"{throttled['throttled']} requests answered 429, every one ridden out).",
        ]
    bound = results.get("bound")
    if bound:
        title = (
            f"N={bound['workloads']} ServiceAccounts in 5 namespaces sharing one identity through one identity binding "
            "(`federation: identity_binding`; federated credentials alone stop at 20):"
        )
        lines += scratch_and_noop(title, bound)
    onboarding = results.get("onboarding")
    if onboarding:
        title = (
            f"N={onboarding['requests']} self-service onboarding requests (ServiceAccounts annotated in 5 namespaces, "
            "10 identities, a Reader grant each), the `onboard` playbook as the EDA rulebook runs it - from scratch "
            "each chain is also proven with a token exchange:"
        )
        lines += scratch_and_noop(title, onboarding)
    biggest = results["runs"][-1]
    lines += ["", f"Requests of the no-op run for N={biggest['workloads']}, by kind:", ""]
    lines += [f"- `{kind}`: {n}" for kind, n in {**biggest["no_op"]["arm"], **biggest["no_op"]["kubernetes"]}.items()]
    return "\n".join(lines) + "\n"


def svg(results: dict[str, Any]) -> str:
    """A two-panel plot (wall time, requests) against N, as plain SVG: no plotting library needed."""
    runs = results["runs"]
    sizes = [r["workloads"] for r in runs]
    width, height, pad = 760, 300, 50
    panel = (width - 3 * pad) / 2

    def x_of(size: int, left: float) -> float:
        top = max(sizes) or 1
        return left + panel * size / top

    def series(values: list[float], left: float, top_value: float, colour: str, label: str, row: int) -> str:
        points = " ".join(
            f"{x_of(s, left):.1f},{height - pad - (height - 2 * pad) * v / top_value:.1f}"
            for s, v in zip(sizes, values, strict=True)
        )
        dots = "".join(
            f'<circle cx="{x_of(s, left):.1f}" cy="{height - pad - (height - 2 * pad) * v / top_value:.1f}" r="3" '
            f'fill="{colour}"/>'
            for s, v in zip(sizes, values, strict=True)
        )
        legend = f'<text x="{left + 8}" y="{pad + 14 * row}" fill="{colour}" font-size="11">{label}</text>'
        return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>{dots}{legend}'

    def axes(left: float, title: str, top_value: float, unit: str) -> str:
        bottom = height - pad
        ticks = "".join(
            f'<text x="{x_of(s, left):.1f}" y="{bottom + 16}" font-size="10" text-anchor="middle">{s}</text>'
            for s in sizes
        )
        return (
            f'<line x1="{left}" y1="{bottom}" x2="{left + panel}" y2="{bottom}" stroke="#333"/>'
            f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{bottom}" stroke="#333"/>{ticks}'
            f'<text x="{left + panel / 2}" y="{pad - 18}" font-size="13" text-anchor="middle">{title}</text>'
            f'<text x="{left - 6}" y="{pad + 4}" font-size="10" text-anchor="end">{top_value:g}{unit}</text>'
            f'<text x="{left - 6}" y="{bottom}" font-size="10" text-anchor="end">0</text>'
            f'<text x="{left + panel / 2}" y="{height - 8}" font-size="11" text-anchor="middle">workloads (N)</text>'
        )

    scratch_time = [r["from_scratch"]["seconds"] for r in runs]
    noop_time = [r["no_op"]["seconds"] for r in runs]
    top_time = max([*scratch_time, 1.0]) * 1.1
    scratch_req = [r["from_scratch"]["arm_requests"] + r["from_scratch"]["kubernetes_requests"] for r in runs]
    noop_req = [r["no_op"]["arm_requests"] + r["no_op"]["kubernetes_requests"] for r in runs]
    top_req = max([*scratch_req, 1]) * 1.1
    right = 2 * pad + panel
    body = (
        axes(pad, "wall time of the workload playbook", round(top_time, 1), " s")
        + series(scratch_time, pad, top_time, "#c62828", "from scratch", 1)
        + series(noop_time, pad, top_time, "#1565c0", "no-op", 2)
        + axes(right, "ARM + Kubernetes requests", round(top_req), "")
        + series(scratch_req, right, top_req, "#c62828", "from scratch", 1)
        + series(noop_req, right, top_req, "#1565c0", "no-op", 2)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>{body}</svg>\n'
    )


def write_readme(table: str) -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench: generated by tests/bench.py --readme -->", "<!-- /bench -->"
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start} ... {end} section")
    head, rest = text.split(start, 1)
    _old, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n\n{table}\n![Wall time and requests against N](docs/bench.svg)\n\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="1,10,50", help="comma-separated numbers of workloads (default 1,10,50)")
    parser.add_argument("--big", action="store_true", help="add N=200")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added to every ARM request (0.1)")
    parser.add_argument("--no-throttled", action="store_true", help="skip the run with Azure's throttling modelled")
    parser.add_argument(
        "--no-bound", action="store_true", help="skip the run with 50 workloads on one identity binding"
    )
    parser.add_argument(
        "--no-onboarding", action="store_true", help="skip the run with 50 self-service onboarding requests"
    )
    parser.add_argument("--readme", action="store_true", help="write docs/bench.md, docs/bench.svg and the README")
    parser.add_argument("--workdir", type=Path, help="an existing lab to use (python -m tests.lab up --workdir DIR)")
    options = parser.parse_args(argv)
    sizes = [int(s) for s in options.sizes.split(",") if s] + ([200] if options.big else [])
    own_lab = options.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="wid-bench-")) if own_lab else options.workdir
    lab = lab_module.up(workdir, quiet=True)
    try:
        with tempfile.TemporaryDirectory(prefix="wid-bench-vars-") as tmp:
            results = bench(
                lab,
                sizes,
                options.latency,
                not options.no_throttled,
                Path(tmp),
                bound=not options.no_bound,
                onboarding=not options.no_onboarding,
            )
    finally:
        if own_lab:
            lab_module.down(workdir)
    results["machine"] = machine()
    table = markdown(results)
    print("\n" + table)
    out = REPO / ".build" / "bench" / time.strftime("%Y%m%dT%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")
    if options.readme:
        docs = REPO / "docs"
        docs.mkdir(exist_ok=True)
        (docs / "bench.md").write_text(table)
        (docs / "bench.svg").write_text(svg(results))
        (docs / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
        write_readme(table)
        print("written to docs/bench.md, docs/bench.svg, docs/bench.json and README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
