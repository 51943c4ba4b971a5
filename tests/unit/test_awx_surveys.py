"""What an AWX admin imports (extensions/awx/) agrees with AWX and with the roles it drives.

Each job template survey passes the rules AWX applies to a survey_spec, read from AWX's source (ansible/awx):
- awx/api/views/__init__.py, JobTemplateSurveySpec._validate_spec_data (POST .../survey_spec/): name and
  description strings, spec a non-empty list; per question type, question_name and variable strings, required a
  bool; no variable twice; type one of SURVEY_TYPE_MAPPING (awx/main/constants.py: text, textarea, password,
  multiplechoice and multiselect take str defaults, integer int, float float or int); a default other than "" of
  that Python type; min and max integers (or null); multiplechoice and multiselect need choices (a list, or one
  string of lines), their default (lines of a string) among the choices, one only for multiplechoice; "$encrypted$"
  defaults only for password questions.
- awx/main/models/mixins.py, SurveyJobTemplateMixin: at launch a question's default goes into the extra
  variables only when it passes _survey_element_validation (text: a string of min..max characters; integer: an int
  within min..max; multiplechoice: one of the choices), and survey defaults override the job template's own extra
  variables ("JT extra_vars -> JT survey defaults -> runtime extra_vars", _update_unified_job_kwargs).
And each survey asks only for real role variables (an option of the flow's roles, or a shared variable their
defaults read, such as cluster_name), with answers of the option's type and choices, never overrides with a default
what the role or extensions/awx/extra_vars.yml would set otherwise, and, with the example extra variables, covers
every required option.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import REPO

AWX = REPO / "extensions" / "awx"
# The roles each flow's playbook runs (site: playbooks/site.yml imports the four set-up flows).
ROLES_OF_FLOW = {
    "cluster": ("cluster",),
    "workload": ("workload",),
    "keyvault": ("keyvault_access",),
    "verify": ("verify",),
    "teardown": ("teardown",),
    "audit": ("audit",),
    "site": ("cluster", "workload", "keyvault_access", "verify"),
    "rotate_issuer": ("issuer_rotation",),
    "migrate_pod_identity": ("pod_identity_migration",),
    "onboard": ("onboarding",),
}
# Flows whose inputs a survey cannot hold: onboard's onboarding_policy is a dictionary (extra variables only).
WITHOUT_SURVEY = {"onboard"}
# The ServiceAccount each flow's Kubernetes credential belongs to (namespace, name) and the file that binds it:
# extensions/awx/rbac/<flow>.yml, but onboard runs the EDA automation's playbook with its least privilege.
ACCOUNTS = {
    "onboard": ("aks-wid-onboarding", "aks-wid-onboarding", REPO / "extensions" / "eda" / "rbac" / "onboarding.yml")
}
# awx/main/constants.py SURVEY_TYPE_MAPPING: the Python type of each question type's default.
SURVEY_TYPE_MAPPING = {
    "text": (str,),
    "textarea": (str,),
    "password": (str,),
    "multiplechoice": (str,),
    "multiselect": (str,),
    "integer": (int,),
    "float": (float, int),
}
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


def _role_options(role: str) -> dict:
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def _options(flow: str) -> dict:
    """The options of every role the flow runs (no two roles share an option name)."""
    return {name: option for role in ROLES_OF_FLOW[flow] for name, option in _role_options(role).items()}


def _shared_variables(flow: str) -> set[str]:
    """Variables of other roles the flow's role defaults read ({{ cluster_name | default('') }} and the like)."""
    names = set()
    for role in ROLES_OF_FLOW[flow]:
        text = (REPO / "roles" / role / "defaults" / "main.yml").read_text()
        expressions = re.findall(r"\{\{(.*?)\}\}", text, flags=re.DOTALL)
        names |= {name for expression in expressions for name in re.findall(r"[a-z_][a-z0-9_]*", expression)}
    return names


def _choices(question: dict) -> list:
    """A question's choices as AWX reads them: a list, or the non-blank lines of one string."""
    choices = question["choices"]
    return [c for c in choices.splitlines() if c.strip()] if isinstance(choices, str) else choices


def _awx_applies_default(question: dict) -> bool:
    """Whether AWX puts the question's default into the job's extra variables at launch (mixins.py
    _update_unified_job_kwargs: a default that is not None and passes _survey_element_validation)."""
    if "default" not in question or question["default"] is None:
        return False
    default, kind = question["default"], question["type"]
    low, high = question.get("min"), question.get("max")
    if kind in ("text", "textarea", "password"):
        return (
            isinstance(default, str)
            and (low in ("", None) or len(default) >= low)
            and (high in ("", None) or len(default) <= high)
        )
    if kind in ("integer", "float"):
        number = (int,) if kind == "integer" else (int, float)
        return (
            isinstance(default, number)
            and not isinstance(default, bool)
            and (low in ("", None) or default >= low)
            and (high in ("", None) or default <= high)
        )
    if kind == "multiplechoice":
        return default in _choices(question)
    return isinstance(default, list) and all(value in _choices(question) for value in default)  # multiselect


def _survey(flow: str) -> dict:
    return json.loads((AWX / "surveys" / f"{flow}.json").read_text())


def test_a_survey_per_main_flow():
    assert set(SURVEYS) == set(ROLES_OF_FLOW) - WITHOUT_SURVEY


def test_flows_without_survey_are_documented():
    """docs/awx.md says that they take extra variables only, and names each required option."""
    docs = (REPO / "docs" / "awx.md").read_text()
    for flow in WITHOUT_SURVEY:
        required = [name for name, option in _options(flow).items() if option.get("required")]
        assert f"`{flow}` takes extra variables, no survey" in docs, flow
        assert all(f"`{name}`" in docs for name in required), (flow, required)


@pytest.mark.parametrize("flow", SURVEYS)
def test_survey_passes_awx_validation(flow):
    """The checks of JobTemplateSurveySpec._validate_spec_data (awx/api/views/__init__.py), in its order."""
    survey = _survey(flow)
    assert set(survey) == {"name", "description", "spec"}
    assert isinstance(survey["name"], str) and survey["name"]
    assert isinstance(survey["description"], str)
    assert isinstance(survey["spec"], list) and survey["spec"], "'spec' doesn't contain any items."
    variables = set()
    for question in survey["spec"]:
        assert isinstance(question, dict)
        for field, kind in (("type", str), ("question_name", str), ("variable", str), ("required", bool)):
            assert isinstance(question.get(field), kind), f"{flow}: '{field}' missing or not a {kind.__name__}"
        assert question["variable"] not in variables, f"{flow}: variable {question['variable']} duplicated"
        variables.add(question["variable"])
        assert question["type"] in SURVEY_TYPE_MAPPING, question
        if question.get("default", "") != "":
            assert isinstance(question["default"], SURVEY_TYPE_MAPPING[question["type"]]), question
            assert not isinstance(question["default"], bool), question  # AWX's isinstance would let a bool by
        for key in ("min", "max"):
            if question.get(key) is not None:
                assert isinstance(question[key], int) and not isinstance(question[key], bool), (flow, key)
        if question["type"] in ("multiplechoice", "multiselect"):
            assert "choices" in question, f"{flow}: {question['variable']} must specify choices"
            assert isinstance(question["choices"], (list, str)) and _choices(question), question
            if "default" in question:
                default = question["default"]
                defaults = [d for d in default.splitlines() if d.strip()] if isinstance(default, str) else default
                if question["type"] == "multiplechoice":
                    assert len(defaults) <= 1, f"{flow}: multiple choice with more than one default"
                assert all(d in question["choices"] for d in defaults), f"{flow}: default not among the choices"
        if isinstance(question.get("default"), str) and question["default"].startswith("$encrypted$"):
            raise AssertionError(f"{flow}: $encrypted$ is reserved for password defaults AWX stored")
        assert question.get("question_description", "") is not None


@pytest.mark.parametrize("flow", SURVEYS)
def test_survey_defaults_override_nothing(flow):
    """A default AWX applies at launch overrides the job template's extra variables and the role's default: it
    must say the same, so an unanswered question changes nothing (mixins.py _update_unified_job_kwargs)."""
    options = _options(flow)
    extra_vars = yaml.safe_load((AWX / "extra_vars.yml").read_text())
    for question in _survey(flow)["spec"]:
        if not _awx_applies_default(question):
            continue
        variable, default = question["variable"], question["default"]
        assert variable not in extra_vars or str(extra_vars[variable]) == str(default), (flow, variable)
        option = options.get(variable)
        role_default = option.get("default") if option else None
        assert not (isinstance(role_default, str) and "{{" in role_default), (
            f"{flow}: the default of {variable} hides the role's computed default {role_default}"
        )
        if option is not None and "default" in option:
            expected = str(role_default).lower() if option.get("type") == "bool" else role_default
            assert default == expected, (flow, variable, default, role_default)


@pytest.mark.parametrize("flow", SURVEYS)
def test_survey_asks_for_real_role_variables(flow):
    roles = ", ".join(ROLES_OF_FLOW[flow])
    options = _options(flow)
    shared = _shared_variables(flow)
    for question in _survey(flow)["spec"]:
        variable = question["variable"]
        assert variable in options or variable in shared, f"{flow}: {variable} is no variable of role(s) {roles}"
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
    asked = {q["variable"]: q for q in _survey(flow)["spec"]}
    extra_vars = yaml.safe_load((AWX / "extra_vars.yml").read_text())
    for name, option in _options(flow).items():
        if not option.get("required"):
            continue
        if name in asked:
            assert asked[name]["required"], f"{flow}: {name} is required by role(s) {ROLES_OF_FLOW[flow]}"
        else:
            assert name in extra_vars, f"{flow}: required {name} is neither asked nor in extra_vars.yml"


def test_credential_types_name_every_flow_and_awx_types():
    needs = yaml.safe_load((AWX / "credential_types.yml").read_text())
    assert set(needs) == set(ROLES_OF_FLOW)
    names = {
        "azure_rm": "Microsoft Azure Resource Manager",
        "kubernetes_bearer_token": "OpenShift or Kubernetes API Bearer Token",
    }
    for flow, types in needs.items():
        assert types.get("azure_rm") == names["azure_rm"], flow
        for namespace, name in types.items():
            assert names[namespace] == name, (flow, namespace)


def _account(flow: str) -> tuple[str, str, object]:
    """(namespace, name, RBAC file) of the flow's ServiceAccount: aks-wid-<flow> (dashes: a Kubernetes name) in
    awx-automation, bound by extensions/awx/rbac/<flow>.yml, unless ACCOUNTS says otherwise."""
    return ACCOUNTS.get(flow, ("awx-automation", f"aks-wid-{flow.replace('_', '-')}", AWX / "rbac" / f"{flow}.yml"))


def _rbac(flow: str) -> list[dict]:
    return yaml.safe_load(_account(flow)[2].read_text())["items"]


def test_every_kubernetes_flow_ships_its_rbac():
    needs = yaml.safe_load((AWX / "credential_types.yml").read_text())
    kubernetes_flows = {flow for flow, types in needs.items() if "kubernetes_bearer_token" in types}
    assert kubernetes_flows == set(ROLES_OF_FLOW) - {"cluster", "keyvault"}
    for flow in kubernetes_flows:
        namespace, name, _path = _account(flow)
        documents = _rbac(flow)
        accounts = [
            (d["metadata"]["namespace"], d["metadata"]["name"]) for d in documents if d["kind"] == "ServiceAccount"
        ]
        roles = {d["metadata"]["name"] for d in documents if d["kind"] == "ClusterRole"}
        assert accounts == [(namespace, name)], flow
        assert roles, flow
        for binding in (d for d in documents if d["kind"] in ("ClusterRoleBinding", "RoleBinding")):
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
            if binding["kind"] == "ClusterRoleBinding":
                assert binding["roleRef"]["name"] in roles, (flow, binding["metadata"]["name"])
        bound = {d["roleRef"]["name"] for d in documents if d["kind"] == "ClusterRoleBinding"}
        assert bound == roles, f"{flow}: a ClusterRole nothing binds"


def test_audit_rbac_is_read_only():
    rules = [rule for d in _rbac("audit") if d["kind"] == "ClusterRole" for rule in d["rules"]]
    assert rules
    assert {verb for rule in rules for verb in rule["verbs"]} <= {"get", "list", "watch"}
    assert not any("*" in rule.get("resources", []) + rule.get("apiGroups", []) for rule in rules)
    assert not any(r.endswith(("/token", "reviews")) for rule in rules for r in rule.get("resources", []))
