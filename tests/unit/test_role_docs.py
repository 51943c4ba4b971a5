"""The README's role variable tables are the argument specs, rendered: they cannot drift from the roles."""

from __future__ import annotations

import yaml

from tests.tools import role_docs


def test_readme_tables_match_the_argument_specs():
    assert role_docs.current() is not None, "README.md lost its role-variables markers"
    assert role_docs.current() == role_docs.generate(), (
        "README.md's role variable tables differ from roles/*/meta/argument_specs.yml; "
        "run: python tests/tools/role_docs.py --write"
    )


def test_every_variable_of_every_role_has_a_row():
    section = role_docs.current()
    for specs_file in role_docs.REPO.glob("roles/*/meta/argument_specs.yml"):
        options = yaml.safe_load(specs_file.read_text())["argument_specs"]["main"]["options"]
        for name in options:
            assert f"| `{name}` |" in section, f"{specs_file.parent.parent.name}: {name} missing from README.md"


def test_markup_becomes_markdown_and_pipes_are_escaped():
    text = "O(a) is V(true) with C(x|y), B(bold), I(it), M(aks.workload_identity.wid_verify)"
    assert role_docs.markdown(text) == "`a` is `true` with `x\\|y`, **bold**, *it*, `aks.workload_identity.wid_verify`"
