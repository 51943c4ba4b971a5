# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Gateways: the one place each resource kind is read and written.

A gateway holds the SDK call, the normalisation of what comes back (snake_case dicts, never SDK models) and the
translation of SDK errors into ``WorkloadIdentityError`` naming the action and the object. Reconcilers, the
verifier, the audit inventory and the fleet engine all go through them, so every read is written once. Each
request is counted in an ``ApiCalls`` (per operation), which modules return as ``api_calls``.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import collections
import threading


class ApiCalls:
    """Requests per API operation; safe to count from worker threads."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            self._counts[name] += count

    def total(self, prefix: str = "") -> int:
        with self._lock:
            return sum(n for key, n in self._counts.items() if key.startswith(prefix))

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))
