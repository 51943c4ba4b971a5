# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A callback for the benchmark: counts the module processes a playbook starts (one per task, one per loop item),
leaving out the actions Ansible runs inside the controller without starting a module, and writes the count to the
file named by WID_BENCH_MODULE_COUNT."""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: count_modules
type: aggregate
short_description: Count the module processes of a run (tests/bench.py)
description:
  - Writes the number of module processes started, by module, to the file in C(WID_BENCH_MODULE_COUNT).
"""

# Actions that run in the controller process: no module is sent anywhere.
CONTROLLER_ONLY = {
    "set_fact",
    "debug",
    "assert",
    "fail",
    "meta",
    "include_tasks",
    "import_tasks",
    "include_role",
    "import_role",
    "include_vars",
    "add_host",
    "group_by",
    "pause",
    "set_stats",
    "validate_argument_spec",
}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "count_modules"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def _count(self, result) -> None:
        action = result._task.action.rsplit(".", 1)[-1]
        if action in CONTROLLER_ONLY:
            return
        self.counts[result._task.action] = self.counts.get(result._task.action, 0) + 1

    def _single(self, result) -> None:
        if "results" not in result._result:  # a loop's aggregate: its items were counted one by one
            self._count(result)

    v2_runner_on_ok = v2_runner_on_failed = _single
    v2_runner_item_on_ok = v2_runner_item_on_failed = _count

    def v2_playbook_on_stats(self, stats) -> None:
        target = os.environ.get("WID_BENCH_MODULE_COUNT")
        if target:
            with open(target, "w", encoding="utf-8") as handle:
                json.dump(self.counts, handle)
