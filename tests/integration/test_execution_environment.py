"""execution-environment.yml stays buildable where no container engine runs: ``ansible-builder create`` renders the
build context, the collection's Python requirements come out of it as ansible-builder's introspection inside the
image would list them, and pip resolves them (with ansible-core and ansible-runner as the definition pins them)
against the package index, for the image's Python (3.11, the base image's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

BIN = Path(sys.executable).parent
DEFINITION = REPO / "execution-environment.yml"


def _index_url() -> str:
    found = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True, check=False
    )
    return os.environ.get("PIP_INDEX_URL") or found.stdout.strip() or "https://pypi.org/simple"


@pytest.fixture(scope="module")
def index_url() -> str:
    url = _index_url()
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/pip/", timeout=15):
            pass
    except OSError as error:
        pytest.skip(f"the package index {url} is unreachable ({error}): cannot check that the EE requirements resolve")
    return url


def _run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    completed = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, f"{' '.join(map(str, command))} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> dict[str, Path]:
    """The collection built as `ansible-galaxy collection build` does, beside the definition, then rendered."""
    work = tmp_path_factory.mktemp("ee")
    _run(BIN / "ansible-galaxy", "collection", "build", REPO, "--output-path", work, cwd=work)
    shutil.copy(DEFINITION, work / DEFINITION.name)
    _run(BIN / "ansible-builder", "create", "-f", work / DEFINITION.name, "-c", work / "context", cwd=work)
    return {"work": work, "context": work / "context"}


def test_definition_is_version_3_with_the_collection_tarball():
    definition = yaml.safe_load(DEFINITION.read_text())
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    tarball = f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    assert definition["version"] == 3
    assert [f["src"] for f in definition["additional_build_files"]] == [tarball]
    assert definition["dependencies"]["galaxy"]["collections"][0]["name"] == f"collections/{tarball}"


def test_create_renders_a_context_that_installs_the_collection(context):
    built = context["context"]
    containerfile = next(p for p in (built / "Containerfile", built / "Dockerfile") if p.exists()).read_text()
    requirements = yaml.safe_load((built / "_build" / "requirements.yml").read_text())
    tarball = requirements["collections"][0]["name"]
    assert requirements["collections"][0]["type"] == "file"
    assert (built / "_build" / tarball).is_file(), f"{tarball} is not in the context"
    for spec in ("ansible-core>=2.16,<2.20", "ansible-runner"):
        assert spec in containerfile, f"{spec} missing from the Containerfile"


def test_python_requirements_resolve_against_the_index(context, index_url):
    work = context["work"]
    tarball = next(work.glob("*.tar.gz"))
    # What ansible-builder's introspection does in the image: the installed collection's Python requirements.
    _run(
        BIN / "ansible-galaxy",
        "collection",
        "install",
        tarball,
        "-p",
        work / "installed",
        "--no-deps",
        "--force",
        cwd=work,
    )
    requirements = work / "requirements.txt"
    _run(BIN / "ansible-builder", "introspect", work / "installed", "--write-pip", requirements, cwd=work)
    wanted = [line.split("#")[0].strip() for line in requirements.read_text().splitlines()]
    assert "kubernetes>=29.0.0" in wanted and any(w.startswith("azure-identity") for w in wanted)
    definition = yaml.safe_load(DEFINITION.read_text())["dependencies"]
    report = _run(
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
        "--index-url", index_url, "--python-version", "3.11", "--only-binary", ":all:",
        "-r", requirements, definition["ansible_core"]["package_pip"], definition["ansible_runner"]["package_pip"],
        cwd=work,
    )  # fmt: skip
    resolved = {item["metadata"]["name"].lower() for item in json.loads(report.stdout)["install"]}
    assert {"ansible-core", "ansible-runner", "kubernetes", "azure-identity", "azure-mgmt-msi"} <= resolved
