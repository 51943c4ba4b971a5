"""The azure_auth and k8s_auth doc fragments document exactly the options of their argument specs."""

from __future__ import annotations

import re
import typing as t

import pytest
import yaml

from ansible_collections.aks.workload_identity.plugins.doc_fragments import azure_auth, k8s_auth
from ansible_collections.aks.workload_identity.plugins.module_utils.azure_client import AZURE_AUTH_ARGSPEC
from ansible_collections.aks.workload_identity.plugins.module_utils.k8s_client import K8S_AUTH_ARGSPEC

PAIRS = [
    pytest.param(azure_auth.ModuleDocFragment, AZURE_AUTH_ARGSPEC, id="azure_auth"),
    pytest.param(k8s_auth.ModuleDocFragment, K8S_AUTH_ARGSPEC, id="k8s_auth"),
]


def _options(fragment: type) -> dict[str, dict[str, t.Any]]:
    return yaml.safe_load(fragment.DOCUMENTATION)["options"]


def _text(doc: dict[str, t.Any]) -> str:
    return " ".join(doc["description"])


@pytest.mark.parametrize(("fragment", "spec"), PAIRS)
def test_every_option_is_documented_and_vice_versa(fragment, spec):
    assert set(_options(fragment)) == set(spec)


@pytest.mark.parametrize(("fragment", "spec"), PAIRS)
def test_types_defaults_choices_and_aliases_agree(fragment, spec):
    for name, doc in _options(fragment).items():
        option = spec[name]
        assert isinstance(doc["description"], list) and doc["description"], name
        assert doc["type"] == option["type"], name
        assert doc.get("default") == option.get("default"), name
        assert doc.get("choices") == option.get("choices"), name
        assert doc.get("aliases") == option.get("aliases"), name
        assert doc.get("required", False) == option.get("required", False), name


@pytest.mark.parametrize(("fragment", "spec"), PAIRS)
def test_environment_variables_are_named_in_order(fragment, spec):
    for name, doc in _options(fragment).items():
        fallback = spec[name].get("fallback")
        variables = list(fallback[1]) if fallback else []
        text = _text(doc)
        assert all(f"E({variable})" in text for variable in variables), name
        positions = [text.index(f"E({variable})") for variable in variables]
        assert positions == sorted(positions), f"{name}: variables must be listed in precedence order"


@pytest.mark.parametrize(("fragment", "spec"), PAIRS)
def test_secret_options_say_they_are_not_logged(fragment, spec):
    for name, doc in _options(fragment).items():
        assert ("C(no_log)" in _text(doc)) is bool(spec[name].get("no_log")), name


@pytest.mark.parametrize(("fragment", "spec"), PAIRS)
def test_option_references_point_at_real_options(fragment, spec):
    documentation = fragment.DOCUMENTATION
    for reference in re.findall(r"O\(([a-z_]+)", documentation):
        assert reference in spec, reference


@pytest.mark.parametrize(("fragment", "spec"), PAIRS)
def test_argument_specs_are_dict_literals_ansible_accepts(fragment, spec):
    for name, option in spec.items():
        assert "type" in option, name
        assert not (option.get("no_log") is None and re.search("pass|secret|token|key", name)), name
