"""The tests' own Azure SDK clients against the lab: to plant state and to check what a module did without asking the
module under test."""

from __future__ import annotations

from typing import Any

from azure.identity import ClientSecretCredential

ARM_SCOPE = "https://management.core.windows.net/.default"


def sdk_client(lab: Any, factory: Any, **options: Any) -> Any:
    """``factory`` (an azure-mgmt-* client class) signed in as the lab's deployer, talking to the emulator."""
    env = lab.env
    credential = ClientSecretCredential(
        env["AZURE_TENANT"],
        env["AZURE_CLIENT_ID"],
        env["AZURE_SECRET"],
        authority=lab.emulator_url,
        disable_instance_discovery=True,
        connection_verify=env["AZURE_CA_BUNDLE"],
    )
    return factory(
        credential,
        env["AZURE_SUBSCRIPTION_ID"],
        base_url=lab.emulator_url,
        credential_scopes=[ARM_SCOPE],
        connection_verify=env["AZURE_CA_BUNDLE"],
        **options,
    )
