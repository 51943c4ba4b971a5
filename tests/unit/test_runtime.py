"""meta/runtime.yml: every module sits in the action group of its API family, so module_defaults on the group
sets authentication once for all of them."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


def _runtime() -> dict:
    return yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())


def _family(module: str) -> set[str]:
    """Which auth fragments a module's DOCUMENTATION extends: that decides its group."""
    tree = ast.parse((REPO / "plugins" / "modules" / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DOCUMENTATION":
            doc = yaml.safe_load(node.value.value)
            fragments = doc.get("extends_documentation_fragment", [])
            return {f.rsplit(".", 1)[-1] for f in fragments} & {"azure_auth", "k8s_auth"}
    raise AssertionError(f"{module} has no DOCUMENTATION")


def test_runtime_declares_floor_and_groups():
    runtime = _runtime()
    assert runtime["requires_ansible"] == ">=2.16.0"
    assert set(runtime["action_groups"]) == {"azure", "k8s"}


def test_every_module_is_in_the_group_of_its_auth_family():
    groups = _runtime()["action_groups"]
    for module in MODULES:
        family = _family(module)
        assert family, f"{module} documents neither azure_auth nor k8s_auth"
        for fragment, group in (("azure_auth", "azure"), ("k8s_auth", "k8s")):
            assert (module in (groups[group] or [])) == (fragment in family), f"{module} vs group {group}"


def test_groups_name_only_existing_modules():
    for group, members in _runtime()["action_groups"].items():
        assert set(members or []) <= set(MODULES), f"group {group} lists missing modules"
