# Copyright: Contributors to the aks.workload_identity collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The rules every option of every module follows, whatever it means, checked on the values as the user wrote them.

Ansible converts what it can: ``name: yes`` becomes the string ``"True"``, ``kubernetes_version: 1.30`` becomes
``"1.3"``, a dictionary given where a string is due becomes its Python repr, and ``""`` passes for a string. None
of these mean what the user wrote, so ``new_module`` checks the parameters as they arrived, before Ansible's
conversion, and refuses them with the option's name and the rule:

- a ``str`` or ``path`` option (or element of a list of strings) must be a string: not a number, boolean,
  dictionary or list;
- and not empty or only whitespace (omit the option to get its default), not padded with whitespace, without
  control characters such as a newline;
- an ``int`` or ``float`` option must not be a boolean.

Options with suboptions (``type: dict`` with ``options``, lists of such dictionaries) are checked the same way,
each error naming the path (``keyvaults[1].role``). Values are never echoed, so ``no_log`` options are safe.

Private to this collection: the names here may change without notice.
"""

from __future__ import annotations

import typing as t

from ansible.module_utils import basic
from ansible.module_utils.basic import AnsibleModule

_STRING_TYPES = ("str", "path")
_NUMBER_TYPES = ("int", "float")


def _kind(value: t.Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dict):
        return "a dictionary"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def string_errors(value: t.Any, field: str) -> list[str]:
    """The rules of a string option's value (``None``, meaning omitted, passes)."""
    if value is None:
        return []
    if not isinstance(value, str):
        hint = " (quote it in YAML)" if isinstance(value, (bool, int, float)) else ""
        return [f"{field}: must be a string, got {_kind(value)}{hint}"]
    if not value.strip():
        return [f"{field}: must not be empty (omit the option to use its default)"]
    errors = []
    if value != value.strip():
        errors.append(f"{field}: must not start or end with whitespace")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        errors.append(f"{field}: must not contain control characters such as a newline or a tab")
    return errors


def _value_errors(spec: t.Mapping[str, t.Any], value: t.Any, field: str) -> list[str]:
    if value is None:
        return []
    kind = spec.get("type", "str")
    if kind in _STRING_TYPES:
        return string_errors(value, field)
    if kind in _NUMBER_TYPES and isinstance(value, bool):
        return [f"{field}: must be a number, got a boolean"]
    options = spec.get("options")
    if kind == "dict" and options and isinstance(value, dict):
        return spec_errors(options, value, f"{field}.")
    if kind == "list" and isinstance(value, list):
        elements = spec.get("elements")
        errors = []
        for index, element in enumerate(value):
            where = f"{field}[{index}]"
            if elements in _STRING_TYPES:
                errors += string_errors(element, where)
            elif elements == "dict" and options and isinstance(element, dict):
                errors += spec_errors(options, element, f"{where}.")
        return errors
    return []


def spec_errors(
    argument_spec: t.Mapping[str, t.Mapping[str, t.Any]], values: t.Mapping[str, t.Any], prefix: str = ""
) -> list[str]:
    """ "option: rule" messages for ``values`` (as the user gave them, before Ansible's conversion) against the
    ``argument_spec``; names under their alias when the user wrote the alias."""
    errors = []
    for name, spec in argument_spec.items():
        for key in (name, *(spec.get("aliases") or ())):
            if key in values:
                errors += _value_errors(spec, values[key], prefix + key)
    return errors


def new_module(argument_spec: dict[str, dict[str, t.Any]], **kwargs: t.Any) -> AnsibleModule:
    """An ``AnsibleModule`` whose parameters also passed ``spec_errors``; otherwise the module fails with every
    error at once, before any request."""
    module = AnsibleModule(argument_spec=argument_spec, **kwargs)
    # basic._load_params is the documented way for a module to see its parameters as they arrived; it parses
    # again the input AnsibleModule read (and kept), so these are the values before Ansible's conversion.
    raw = basic._load_params()
    errors = spec_errors(argument_spec, {k: v for k, v in raw.items() if not k.startswith("_ansible_")})
    if errors:
        module.fail_json(msg="Invalid input: " + "; ".join(errors), errors=errors)
    return module
