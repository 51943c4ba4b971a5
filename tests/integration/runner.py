"""Run one of the collection's modules the way a user does: ansible-playbook, one task, against the lab.

Each call is a real Ansible run (controller, module transport, module_defaults-free: auth comes from the lab's
environment, as AWX injects it), so integration tests exercise the module as shipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@dataclass
class ModuleRun:
    result: dict[str, Any]  # the registered task result
    output: str  # everything ansible-playbook printed (for no_log / secret-leak assertions)
    returncode: int

    @property
    def changed(self) -> bool:
        return bool(self.result.get("changed"))

    @property
    def failed(self) -> bool:
        return bool(self.result.get("failed"))

    def __getitem__(self, key: str) -> Any:
        return self.result[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.result.get(key, default)


def run_module(
    module: str,
    args: dict[str, Any],
    *,
    env: dict[str, str],
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
) -> ModuleRun:
    """Run ``aks.workload_identity.<module>`` with ``args``; failures are returned, not raised."""
    from tests.conftest import COLLECTIONS

    with tempfile.TemporaryDirectory(prefix="wid-run-") as tmp:
        out = Path(tmp) / "result.json"
        playbook = Path(tmp) / "play.yml"
        task = {
            "name": f"run {module}",
            f"aks.workload_identity.{module}": args,
            "register": "wid_result",
            "ignore_errors": True,
        }
        save = {
            "name": "save",
            "ansible.builtin.copy": {"content": "{{ wid_result | to_json }}", "dest": str(out)},
            "check_mode": False,
            "diff": False,
        }
        playbook.write_text(
            json.dumps([{"hosts": "localhost", "gather_facts": False, "connection": "local", "tasks": [task, save]}])
        )
        command = [str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", "localhost,"]
        if check:
            command.append("--check")
        if diff:
            command.append("--diff")
        if verbosity:
            command.append("-" + "v" * verbosity)
        environ = {
            **os.environ,
            **env,
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        }
        completed = subprocess.run(
            command, env=environ, capture_output=True, text=True, cwd=tmp, timeout=600, check=False
        )
        output = completed.stdout + completed.stderr
        if not out.exists():
            raise AssertionError(f"ansible-playbook did not run the task:\n{output}")
        return ModuleRun(json.loads(out.read_text()), output, completed.returncode)
