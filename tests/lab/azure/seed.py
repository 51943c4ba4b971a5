"""Names of the seeded lab world. Fixed, so vars files and docs can name them; secrets are made per start."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

DEFAULT_SEED: dict[str, Any] = {
    "resource_group": "rg-wid-lab",
    "cluster": "aks-wid-lab",  # exists with the OIDC issuer OFF, wired to the lab's kube-apiserver
    "cluster_kubernetes_version": "1.33.5",
    "rbac_vault": "kv-wid-rbac",  # enableRbacAuthorization: true
    # The deployer's data-plane role on the RBAC vault: in Microsoft's walk-through whoever creates the RBAC vault
    # gives themselves "Key Vault Secrets Officer" on it to set the secret (azure-behaviour §9), so the docs'
    # `az keyvault secret set/show` steps work for a lab user as they do there. "" = no such assignment.
    "rbac_vault_deployer_role": "Key Vault Secrets Officer",
    "policy_vault": "kv-wid-policy",  # access-policy permission model
    "secret_name": "app-secret",  # one secret in each vault
    "deployer_display_name": "sp-wid-lab-deployer",  # the service principal playbooks log in as (Owner)
}


def make_seed(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    seed = {**DEFAULT_SEED, **(overrides or {})}
    seed.setdefault("deployer_client_id", str(uuid.uuid4()))
    seed.setdefault("deployer_object_id", str(uuid.uuid4()))
    seed.setdefault("deployer_secret", secrets.token_urlsafe(30))
    seed.setdefault("secret_value", "lab-" + secrets.token_hex(12))
    seed.setdefault("cluster_issuer_uuid", str(uuid.uuid4()))
    return seed
