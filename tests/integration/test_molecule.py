"""Every Molecule scenario in extensions/molecule, run against the lab from the one test command.

Molecule's own `test` sequence is run step by step so the lab can witness each step: between `prepare` and
`converge`, the `check` step (the converge playbook in check mode) must write nothing, neither to Azure (the
emulator's request log) nor to Kubernetes (the apiserver's audit log). `idempotence` fails by itself when the
second converge reports a change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import COLLECTIONS, REPO

SCENARIO_ROOT = REPO / "extensions" / "molecule"
SCENARIOS = sorted(p.parent.name for p in SCENARIO_ROOT.glob("*/molecule.yml"))
LIVE = "live"
# What a real subscription needs: the variables AWX's Azure and Kubernetes credentials inject.
LIVE_SETTINGS = ("AZURE_SUBSCRIPTION_ID", "AZURE_CLIENT_ID", "AZURE_SECRET", "AZURE_TENANT", "K8S_AUTH_KUBECONFIG")


def _sequence(scenario: str) -> list[str]:
    base = yaml.safe_load((SCENARIO_ROOT / "config.yml").read_text())
    own = yaml.safe_load((SCENARIO_ROOT / scenario / "molecule.yml").read_text()) or {}
    return (own.get("scenario") or {}).get("test_sequence") or base["scenario"]["test_sequence"]


def _molecule(step: str, scenario: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "molecule", step, "-s", scenario],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def _environment(extra: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        **extra,
        # Molecule runs ansible-playbook and ansible-config by name: this interpreter's tools first.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "MOLECULE_PYTHON": sys.executable,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
    }


# Scenarios that need more of the lab than its first cluster: the clusters to add first (Lab.add_cluster), whose
# settings (LAB_CLUSTER_<NAME>_*) the scenario's playbooks then read from the environment.
LAB_CLUSTERS = {"issuer_rotation": ("green",)}


def _run_scenario(scenario: str, env: dict[str, str], lab=None) -> None:
    clusters = (None, *LAB_CLUSTERS.get(scenario, ())) if lab is not None else ()
    for step in _sequence(scenario):
        marks = (lab.last_seq(), {c: lab.kube_mark(cluster=c) for c in clusters}) if step == "check" else None
        completed = _molecule(step, scenario, env)
        assert completed.returncode == 0, (
            f"molecule {step} -s {scenario} failed:\n{completed.stdout}\n{completed.stderr}"
        )
        if marks is not None and lab is not None:
            azure_writes = lab.writes(marks[0])
            assert azure_writes == [], f"check mode wrote to Azure: {azure_writes}"
            for cluster, mark in marks[1].items():
                kube_writes = lab.kube_writes(mark, cluster=cluster)
                assert kube_writes == [], (
                    f"check mode wrote to Kubernetes ({cluster or 'first cluster'}): {kube_writes}"
                )


def test_a_default_scenario_exists():
    """Molecule in collection mode refuses to run without extensions/molecule/default."""
    assert "default" in SCENARIOS


@pytest.mark.lab
@pytest.mark.molecule
@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != LIVE])
def test_scenario_on_the_lab(lab, scenario):
    for cluster in LAB_CLUSTERS.get(scenario, ()):
        lab.add_cluster(cluster)
    _run_scenario(scenario, _environment(lab.env), lab)


@pytest.mark.live
@pytest.mark.molecule
def test_live_scenario_on_a_real_subscription():
    """The same flow against a real subscription and cluster, when the usual settings say where they are."""
    missing = [name for name in LIVE_SETTINGS if not os.environ.get(name)]
    if missing or LIVE not in SCENARIOS:
        pytest.skip(f"live scenario needs a real subscription and cluster; not set: {', '.join(missing) or 'scenario'}")
    vars_file = os.environ.get("MOLECULE_VARS_FILE") or str(Path.cwd() / "live.yml")
    if not Path(vars_file).is_file():
        pytest.skip(
            f"live scenario needs a vars file describing the real cluster: set MOLECULE_VARS_FILE ({vars_file} missing)"
        )
    _run_scenario(LIVE, _environment({"MOLECULE_VARS_FILE": vars_file}))
