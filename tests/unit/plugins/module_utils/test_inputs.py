"""The rules every option follows, on the values as written (inputs.py)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils.inputs import new_module, spec_errors, string_errors
from tests.unit.conftest import failure, module_args

SPEC = {
    "name": {"type": "str", "required": True},
    "path": {"type": "path", "aliases": ["file"]},
    "count": {"type": "int"},
    "ratio": {"type": "float"},
    "flag": {"type": "bool"},
    "names": {"type": "list", "elements": "str"},
    "password": {"type": "str", "no_log": True},
    "anything": {"type": "raw"},
    "tags": {"type": "dict"},
    "target": {"type": "dict", "options": {"group": {"type": "str"}, "size": {"type": "int"}}},
    "targets": {"type": "list", "elements": "dict", "options": {"group": {"type": "str"}}},
}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"name": True}, "name: must be a string, got a boolean (quote it in YAML)"),
        ({"name": 1.3}, "name: must be a string, got a number (quote it in YAML)"),
        ({"name": {"a": 1}}, "name: must be a string, got a dictionary"),
        ({"name": ["a"]}, "name: must be a string, got a list"),
        ({"name": ""}, "name: must not be empty (omit the option to use its default)"),
        ({"name": "   "}, "name: must not be empty (omit the option to use its default)"),
        ({"name": " a"}, "name: must not start or end with whitespace"),
        ({"name": "a\n"}, "name: must not start or end with whitespace"),
        ({"name": "a\tb"}, "name: must not contain control characters such as a newline or a tab"),
        ({"name": "a\x7fb"}, "name: must not contain control characters such as a newline or a tab"),
        ({"file": 7}, "file: must be a string, got a number"),  # named as the user wrote it
        ({"count": True}, "count: must be a number, got a boolean"),
        ({"ratio": False}, "ratio: must be a number, got a boolean"),
        ({"names": ["a", ""]}, "names[1]: must not be empty"),
        ({"names": ["a", {"b": 1}]}, "names[1]: must be a string, got a dictionary"),
        ({"target": {"group": 5}}, "target.group: must be a string, got a number"),
        ({"target": {"size": True}}, "target.size: must be a number, got a boolean"),
        ({"targets": [{"group": "ok"}, {"group": " x"}]}, "targets[1].group: must not start or end with whitespace"),
    ],
)
def test_each_class_is_refused_naming_the_option(values, expected):
    errors = spec_errors(SPEC, values)
    assert errors and errors[0].startswith(expected), errors


@pytest.mark.parametrize(
    "values",
    [
        {"name": "a b"},  # inner spaces are a value's business
        {"name": "ÄÖ-ok"},
        {"name": None},  # omitted
        {"count": 3, "ratio": 0.5, "flag": True},
        {"count": "3"},  # Ansible converts a numeric string, as a template renders it
        {"names": "a,b"},  # Ansible's comma-separated list
        {"anything": {"x": [1, True]}, "tags": {"k": 1}},  # raw and free-form dictionaries have their own rules
        {"target": None, "targets": []},
        {"unknown": True},  # Ansible reports unknown options itself
    ],
)
def test_values_that_mean_what_they_say_pass(values):
    assert spec_errors(SPEC, {"name": "x", **values} if "name" not in values else values) == []


def test_a_secret_is_never_echoed():
    errors = spec_errors(SPEC, {"name": "x", "password": " s3cr3t-value"})
    assert errors == ["password: must not start or end with whitespace"]
    assert "s3cr3t" not in json.dumps(errors) and "s3cr3t" not in json.dumps(string_errors(["s3cr3t"], "password"))


def test_a_module_fails_with_every_error_before_doing_anything(capsys):
    with module_args({"name": True, "count": False, "targets": [{"group": ""}]}):
        result = failure(capsys, lambda: new_module(SPEC))
    assert result["failed"] and result["errors"] == [
        "name: must be a string, got a boolean (quote it in YAML)",
        "count: must be a number, got a boolean",
        "targets[0].group: must not be empty (omit the option to use its default)",
    ]
    assert result["msg"] == "Invalid input: " + "; ".join(result["errors"])


def test_ansible_s_own_errors_come_first(capsys):
    with module_args({"count": True}):
        result = failure(capsys, lambda: new_module(SPEC))
    assert "missing required arguments: name" in result["msg"]


def test_a_good_module_gets_ansible_s_converted_values():
    with module_args({"name": "x", "count": "3", "names": "a,b"}):
        module = new_module(SPEC)
    assert module.params["count"] == 3 and module.params["names"] == ["a", "b"]
