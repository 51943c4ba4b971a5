"""Every role documents exactly what it accepts: meta/argument_specs.yml equals defaults/main.yml, public
variables carry the role's name, and tasks call modules by their fully qualified names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = (
    sorted(p.name for p in (REPO / "roles").glob("*/") if (p / "tasks").is_dir()) if (REPO / "roles").is_dir() else []
)
# Task keywords that are not module names.
KEYWORDS = {
    "name",
    "when",
    "loop",
    "loop_control",
    "register",
    "vars",
    "tags",
    "block",
    "rescue",
    "always",
    "notify",
    "become",
    "delegate_to",
    "run_once",
    "check_mode",
    "diff",
    "changed_when",
    "failed_when",
    "until",
    "retries",
    "delay",
    "ignore_errors",
    "no_log",
    "environment",
    "module_defaults",
    "args",
    "listen",
    "any_errors_fatal",
    "throttle",
    "timeout",
    "collections",
    "delegate_facts",
    "ignore_unreachable",
    "debugger",
    "become_user",
    "connection",
    "async",
    "poll",
    "with_items",
    "with_dict",
    "with_list",
}


def _yaml(path: Path):
    return yaml.safe_load(path.read_text()) if path.exists() else None


def _spec_options(role: str) -> dict:
    spec = _yaml(REPO / "roles" / role / "meta" / "argument_specs.yml")
    assert spec and "main" in spec["argument_specs"], f"{role}: meta/argument_specs.yml has no main entry point"
    return spec["argument_specs"]["main"].get("options") or {}


def test_there_are_roles():
    assert ROLES, "no roles found under roles/"


@pytest.mark.parametrize("role", ROLES)
def test_argument_spec_equals_defaults(role):
    defaults = _yaml(REPO / "roles" / role / "defaults" / "main.yml") or {}
    options = _spec_options(role)
    assert set(defaults) <= set(options), f"{role}: defaults not in the argument spec: {set(defaults) - set(options)}"
    for name, option in options.items():
        assert option.get("description"), f"{role}: {name} has no description"
        if name in defaults:
            assert option.get("default") == defaults[name], f"{role}: {name} default differs from defaults/main.yml"
        else:
            assert option.get("required"), f"{role}: {name} is neither required nor defaulted in defaults/main.yml"


@pytest.mark.parametrize("role", ROLES)
def test_public_variables_carry_the_role_name(role):
    for name in _spec_options(role):
        assert name.startswith(f"{role}_"), f"{role}: variable {name} is not prefixed with the role name"


def _tasks(node):
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        for key in ("block", "rescue", "always"):
            if key in node:
                yield from _tasks(node[key])
        if not {"block", "rescue", "always"} & set(node):
            yield node


@pytest.mark.parametrize("role", ROLES)
def test_tasks_use_fully_qualified_names(role):
    for path in (REPO / "roles" / role).glob("**/tasks/*.yml"):
        for task in _tasks(_yaml(path) or []):
            modules = [k for k in task if k not in KEYWORDS]
            assert len(modules) == 1, f"{path}: task {task.get('name')!r} names {modules}"
            assert modules[0].count(".") >= 2, f"{path}: {modules[0]} is not a fully qualified name"
