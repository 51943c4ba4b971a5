"""Make the repository importable as ``ansible_collections.aks.workload_identity`` for every test.

The checkout can live anywhere; a symlink under .build/collections gives it the path Ansible expects.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / ".build" / "collections"
_LINK = COLLECTIONS / "ansible_collections" / "aks" / "workload_identity"


def _ensure_collection_path() -> None:
    if REPO.parent.name == "aks" and REPO.parent.parent.name == "ansible_collections":
        root = str(REPO.parent.parent.parent)  # already laid out as ansible-test wants
    else:
        _LINK.parent.mkdir(parents=True, exist_ok=True)
        if not _LINK.is_symlink():
            with contextlib.suppress(FileExistsError):  # another test session made it at the same moment
                _LINK.symlink_to(REPO, target_is_directory=True)
        root = str(COLLECTIONS)
    if root not in sys.path:
        sys.path.insert(0, root)
    os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", root)


_ensure_collection_path()


def _resolve_localhost_names() -> None:
    """The lab's vault hosts are names under localhost: resolve them to loopback in this process as the lab's own
    processes do (tests/lab/resolver/sitecustomize.py), whatever the host's resolver does."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_lab_loopback_names", REPO / "tests" / "lab" / "resolver" / "sitecustomize.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_resolve_localhost_names()


# --------------------------------------------------------------------------- the lab, for tests that need it
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """The whole lab (Azure emulator + real kube-apiserver), started once per test session in its own folder.

    Set LAB_WORKDIR to reuse a lab already brought up with ``python -m tests.lab up --workdir DIR``.
    """
    from tests.lab import lab as lab_module

    reuse = os.environ.get("LAB_WORKDIR")
    if reuse:
        yield lab_module.up(Path(reuse), quiet=True)
        return
    workdir = tmp_path_factory.mktemp("lab")
    running = lab_module.up(workdir, quiet=True)
    try:
        yield running
    finally:
        lab_module.down(workdir)
