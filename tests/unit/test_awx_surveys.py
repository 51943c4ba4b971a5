"""What an AWX admin imports (extensions/awx/) agrees with the roles it drives.

Each job template survey has AWX's survey_spec shape (name, description, spec[] of questions with question_name,
variable, type, required, default and, for choices, choices; as AWX's JobTemplateSurveySpec view validates it in
ansible/awx awx/api/views/__init__.py), asks only for real role variables (an option of the flow's role, or a
shared variable its defaults read, such as cluster_name), with answers of the option's type and choices, and,
together with the example extra variables, covers every required option.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import REPO

AWX = REPO / "extensions" / "awx"
ROLE_OF_FLOW = {
    "cluster": "cluster",
    "workload": "workload",
    "keyvault": "keyvault_access",
    "verify": "verify",
    "teardown": "teardown",
    "audit": "audit",
}
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
# The role option types a survey answer of each AWX type can satisfy (answers arrive as JSON: text is a string,
# integer a number; Ansible's argument spec turns "true"/"false" into a bool).
COMPATIBLE = {
    "text": {"str", "path", "raw"},
    "textarea": {"str", "raw"},
    "password": {"str"},
    "integer": {"int", "float", "raw"},
    "float": {"float", "raw"},
    "multiplechoice": {"str", "bool", "raw"},
    "multiselect": {"list"},
}
SURVEYS = sorted(p.stem for p in (AWX / "surveys").glob("*.json"))


def _options(role: str) -> dict:
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def _shared_variables(role: str) -> set[str]:
    """Variables of other roles the role's defaults read ({{ cluster_name | default('') }} and the like)."""
    text = (REPO / "roles" / role / "defaults" / "main.yml").read_text()
    expressions = re.findall(r"\{\{(.*?)\}\}", text, flags=re.DOTALL)
    return {name for expression in expressions for name in re.findall(r"[a-z_][a-z0-9_]*", expression)}


def _survey(flow: str) -> dict:
    return json.loads((AWX / "surveys" / f"{flow}.json").read_text())


def test_a_survey_per_main_flow():
    assert set(SURVEYS) == set(ROLE_OF_FLOW)


@pytest.mark.parametrize("flow", SURVEYS)
def test_survey_has_awx_shape(flow):
    survey = _survey(flow)
    assert set(survey) == {"name", "description", "spec"}
    assert survey["name"] and isinstance(survey["spec"], list) and survey["spec"]
    variables = [q["variable"] for q in survey["spec"]]
    assert len(variables) == len(set(variables)), "a variable asked twice"
    for question in survey["spec"]:
        assert {"question_name", "variable", "type", "required"} <= set(question), question
        assert question["type"] in SURVEY_TYPES, question
        assert isinstance(question["required"], bool)
        if question["type"] in {"multiplechoice", "multiselect"}:
            assert question["choices"], question
            if question.get("default") not in (None, ""):
                assert question["default"] in question["choices"], question


@pytest.mark.parametrize("flow", SURVEYS)
def test_survey_asks_for_real_role_variables(flow):
    role = ROLE_OF_FLOW[flow]
    options = _options(role)
    shared = _shared_variables(role)
    for question in _survey(flow)["spec"]:
        variable = question["variable"]
        assert variable in options or variable in shared, f"{flow}: {variable} is no variable of role {role}"
        option = options.get(variable)
        if option is None:
            continue
        assert option.get("type", "str") in COMPATIBLE[question["type"]], (flow, variable, option.get("type"))
        if option.get("choices") and question["type"] == "multiplechoice":
            assert set(question["choices"]) <= {str(c) for c in option["choices"]}, (flow, variable)
        if option.get("type") == "bool" and question["type"] == "multiplechoice":
            assert set(question["choices"]) <= {"true", "false"}, (flow, variable)


@pytest.mark.parametrize("flow", SURVEYS)
def test_required_role_options_are_covered(flow):
    """A required option is asked (and required) by the survey or set by the example extra variables."""
    role = ROLE_OF_FLOW[flow]
    asked = {q["variable"]: q for q in _survey(flow)["spec"]}
    extra_vars = yaml.safe_load((AWX / "extra_vars.yml").read_text())
    for name, option in _options(role).items():
        if not option.get("required"):
            continue
        if name in asked:
            assert asked[name]["required"], f"{flow}: {name} is required by role {role}"
        else:
            assert name in extra_vars, f"{flow}: required {name} is neither asked nor in extra_vars.yml"


def test_credential_types_name_every_flow_and_awx_types():
    needs = yaml.safe_load((AWX / "credential_types.yml").read_text())
    assert set(needs) == set(ROLE_OF_FLOW)
    names = {
        "azure_rm": "Microsoft Azure Resource Manager",
        "kubernetes_bearer_token": "OpenShift or Kubernetes API Bearer Token",
    }
    for flow, types in needs.items():
        assert types.get("azure_rm") == names["azure_rm"], flow
        for namespace, name in types.items():
            assert names[namespace] == name, (flow, namespace)


@pytest.mark.parametrize("flow", ["workload", "verify"])
def test_kubernetes_flows_ship_their_rbac(flow):
    assert "kubernetes_bearer_token" in yaml.safe_load((AWX / "credential_types.yml").read_text())[flow]
    kinds = [d["kind"] for d in yaml.safe_load((AWX / "rbac" / f"{flow}.yml").read_text())["items"]]
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"} <= set(kinds)
