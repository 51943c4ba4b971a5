"""trust_map: the join of issuers x identities x credentials x ServiceAccounts x workloads, and every finding.

Each test starts from one clean set-up (no finding at all), plants one problem and checks that exactly the
expected finding appears, by code and subject."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.aks.workload_identity.plugins.module_utils import trust_map as tm

ISSUER = (
    "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/0328c7fa-e740-4752-af1c-182a774aacc7/"
)
OLD_ISSUER = (
    "https://eastus.oic.prod-aks.azure.com/72f988bf-86f1-41af-91ab-2d7cd011db47/11111111-e740-4752-af1c-182a774aacc7/"
)
CLIENT_ID = "9bb715b3-e30d-4143-b4ab-e6d3603d9864"
OTHER_CLIENT_ID = "0f0f0f0f-e30d-4143-b4ab-e6d3603d9864"
PRINCIPAL_ID = "5c3b1a2e-0000-4000-8000-000000000001"
SUBSCRIPTION = "/subscriptions/00000000-0000-4000-8000-00000000a11b"


def credential(name="fic-orders", issuer=ISSUER, subject="system:serviceaccount:orders:orders-api", audiences=None):
    return {
        "name": name,
        "issuer": issuer,
        "subject": subject,
        "audiences": audiences or ["api://AzureADTokenExchange"],
    }


def service_account(namespace="orders", name="orders-api", annotations=None, labels=None):
    metadata = {"namespace": namespace, "name": name}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    return {"metadata": metadata}


def deployment(name="orders-api", namespace="orders", service_account="orders-api", template_labels=None, labels=None):
    return {
        "kind": "Deployment",
        "document": {
            "metadata": {"namespace": namespace, "name": name, "labels": labels or {}},
            "spec": {
                "template": {
                    "metadata": {"labels": {"app": name, "azure.workload.identity/use": "true"}}
                    if template_labels is None
                    else {"labels": template_labels},
                    "spec": {"serviceAccountName": service_account, "containers": [{"name": "app"}]},
                }
            },
        },
    }


def pod(name, client_id, service_account="orders-api", owner=("ReplicaSet", "orders-api-5d9c"), phase="Running"):
    metadata = {"namespace": "orders", "name": name, "labels": {"azure.workload.identity/use": "true"}}
    if owner:
        metadata["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {
        "metadata": metadata,
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{"name": "app", "env": [{"name": "AZURE_CLIENT_ID", "value": client_id}]}],
        },
        "status": {"phase": phase},
    }


@pytest.fixture
def clean() -> dict:
    """One workload set up correctly: annotated ServiceAccount, identity, credential, grant, labelled Deployment."""
    return {
        "clusters": [{"resource_group": "rg-apps", "name": "aks-prod", "issuer_url": ISSUER}],
        "issuer_urls": [],
        "cluster_issuer": ISSUER,
        "identity_scope": "resource group rg-apps",
        "identities": [
            {
                "id": f"{SUBSCRIPTION}/resourcegroups/rg-apps/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-orders",
                "name": "id-orders",
                "resource_group": "rg-apps",
                "client_id": CLIENT_ID,
                "principal_id": PRINCIPAL_ID,
                "credentials": [credential()],
            }
        ],
        "role_assignments": [
            {
                "scope": f"{SUBSCRIPTION}/resourceGroups/rg-apps",
                "role_definition_id": "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
                "role_name": "Reader",
                "principal_id": PRINCIPAL_ID.upper(),
            },
            {"scope": SUBSCRIPTION, "role_definition_id": "x", "role_name": "Owner", "principal_id": "someone-else"},
        ],
        "namespaces": None,
        "service_accounts": [
            service_account(annotations={"azure.workload.identity/client-id": CLIENT_ID}),
            service_account(name="default"),
        ],
        "workloads": [deployment()],
        "pods": [pod("orders-api-5d9c-abcde", CLIENT_ID)],
        "pod_identity": {"identities": [], "bindings": []},
    }


def codes(result: dict) -> list[tuple[str, str]]:
    return [(f["code"], f["subject"]) for f in result["findings"]]


def test_clean_setup_has_no_finding_and_a_full_map(clean):
    result = tm.build_trust_map(clean)
    assert result["findings"] == []
    assert result["summary"]["errors"] == result["summary"]["warnings"] == result["summary"]["info"] == 0
    [entry] = result["map"]
    assert entry["namespace"] == "orders" and entry["service_account"] == "orders-api" and entry["annotated"]
    assert entry["identity"]["name"] == "id-orders" and entry["client_id"] == CLIENT_ID
    assert [(c["name"], c["issuer_status"]) for c in entry["credentials"]] == [("fic-orders", "ok")]
    assert entry["credentials"][0]["issuer_owner"] == "cluster rg-apps/aks-prod"
    assert entry["grants"] == [
        {
            "role": "Reader",
            "role_definition_id": "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "scope": f"{SUBSCRIPTION}/resourceGroups/rg-apps",
        }
    ]
    assert entry["workloads"] == [
        {"kind": "Deployment", "name": "orders-api", "labelled": True, "identity_binding": False}
    ]
    assert entry["via"] == "federated_credential" and entry["bindings"] == entry["rbac_grants"] == []
    # Bindings and RBAC not read: not judged, and said so with None.
    assert result["identity_bindings"] is None and result["rbac_grants"] is None
    assert entry["pods"] == [{"name": "orders-api-5d9c-abcde", "client_ids": [CLIENT_ID], "stale": False}]
    assert result["identities"][0]["credential_count"] == 1


def test_credential_for_a_missing_service_account_is_orphaned(clean):
    clean["identities"][0]["credentials"].append(credential("fic-gone", subject="system:serviceaccount:orders:gone"))
    result = tm.build_trust_map(clean)
    assert codes(result) == [("credential-orphaned", "FederatedIdentityCredential/rg-apps/id-orders/fic-gone")]
    assert result["findings"][0]["severity"] == "warning"
    gone = next(e for e in result["map"] if e["service_account"] == "gone")
    assert not gone["service_account_exists"] and not gone["annotated"]


def test_stale_issuer_of_a_recreated_cluster(clean):
    clean["identities"][0]["credentials"] = [credential("fic-old", issuer=OLD_ISSUER)]
    result = tm.build_trust_map(clean)
    assert codes(result) == [
        ("annotation-no-credential", "ServiceAccount/orders/orders-api"),
        ("issuer-unknown", "FederatedIdentityCredential/rg-apps/id-orders/fic-old"),
    ]
    unknown = result["findings"][1]
    assert OLD_ISSUER in unknown["message"] and ISSUER in unknown["fix"]


@pytest.mark.parametrize(
    "issuer, reason",
    [(ISSUER.rstrip("/"), "a trailing slash"), (ISSUER.replace("eastus", "EastUS"), "letter case")],
)
def test_issuer_near_miss(clean, issuer, reason):
    clean["identities"][0]["credentials"] = [credential(issuer=issuer)]
    result = tm.build_trust_map(clean)
    # The near miss explains why the ServiceAccount has no credential: no second finding for it.
    assert codes(result) == [("issuer-near-miss", "FederatedIdentityCredential/rg-apps/id-orders/fic-orders")]
    assert reason in result["findings"][0]["message"] and result["findings"][0]["severity"] == "error"


def test_subject_near_miss_by_case(clean):
    clean["identities"][0]["credentials"] = [credential(subject="system:serviceaccount:orders:Orders-API")]
    result = tm.build_trust_map(clean)
    assert codes(result) == [("subject-near-miss", "FederatedIdentityCredential/rg-apps/id-orders/fic-orders")]
    assert "letter case" in result["findings"][0]["message"]


def test_annotation_with_unknown_client_id(clean):
    clean["service_accounts"].append(
        service_account(name="stranger", annotations={"azure.workload.identity/client-id": OTHER_CLIENT_ID})
    )
    clean["service_accounts"].append(
        service_account(name="typo", annotations={"azure.workload.identity/client-id": "not-a-guid"})
    )
    result = tm.build_trust_map(clean)
    assert codes(result) == [
        ("annotation-unknown-client-id", "ServiceAccount/orders/stranger"),
        ("annotation-unknown-client-id", "ServiceAccount/orders/typo"),
    ]
    assert "resource group rg-apps" in result["findings"][0]["message"]
    assert "is not a GUID" in result["findings"][1]["message"]
    stranger = next(e for e in result["map"] if e["service_account"] == "stranger")
    assert stranger["identity"] is None


def test_annotation_without_credential(clean):
    clean["service_accounts"].append(
        service_account(name="second", annotations={"azure.workload.identity/client-id": CLIENT_ID.upper()})
    )
    result = tm.build_trust_map(clean)
    assert codes(result) == [("annotation-no-credential", "ServiceAccount/orders/second")]
    assert "system:serviceaccount:orders:second" in result["findings"][0]["message"]


def test_wrong_audience_is_no_credential(clean):
    clean["identities"][0]["credentials"] = [credential(audiences=["api://other"])]
    assert codes(tm.build_trust_map(clean)) == [("annotation-no-credential", "ServiceAccount/orders/orders-api")]


def test_workload_without_label(clean):
    clean["workloads"].append(deployment("worker", template_labels={"app": "worker"}))
    clean["workloads"].append(deployment("other", service_account="default", template_labels={}))  # not annotated
    result = tm.build_trust_map(clean)
    assert codes(result) == [("workload-label-missing", "Deployment/orders/worker")]
    assert "wid_workload_patch" in result["findings"][0]["fix"]


def test_label_on_deployment_metadata_is_named(clean):
    clean["workloads"] = [deployment(template_labels={}, labels={"azure.workload.identity/use": "true"})]
    result = tm.build_trust_map(clean)
    assert codes(result) == [("workload-label-missing", "Deployment/orders/orders-api")]
    assert "own metadata" in result["findings"][0]["message"]


def _job(kind, labels, template_labels, owner=None, name=None):
    template = {"metadata": {"labels": template_labels}, "spec": {"serviceAccountName": "orders-api"}}
    metadata = {"namespace": "orders", "name": name or f"nightly-{kind.lower()}", "labels": labels}
    if owner:
        metadata["ownerReferences"] = [{"kind": "CronJob", "name": owner, "controller": True}]
    if kind == "CronJob":
        spec = {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        spec = {"template": template}
    return {"kind": kind, "document": {"metadata": metadata, "spec": spec}}


def test_label_on_job_and_cronjob_metadata(clean):
    clean["workloads"] += [
        _job("Job", {"azure.workload.identity/use": "true"}, {}),
        _job("CronJob", {"azure.workload.identity/use": "true"}, {}),
        # A Job the CronJob made copies its template: reported through the CronJob only.
        _job("Job", {}, {}, owner="nightly-cronjob", name="nightly-cronjob-28001"),
    ]
    result = tm.build_trust_map(clean)
    assert codes(result) == [
        ("label-on-job-metadata", "CronJob/orders/nightly-cronjob"),
        ("label-on-job-metadata", "Job/orders/nightly-job"),
    ]
    assert "spec.jobTemplate.spec.template.metadata" in result["findings"][0]["fix"]
    assert "create the Job again" in result["findings"][1]["fix"]


def test_cronjob_without_label(clean):
    clean["workloads"].append(_job("CronJob", {}, {"app": "x"}))
    assert codes(tm.build_trust_map(clean)) == [("workload-label-missing", "CronJob/orders/nightly-cronjob")]


def test_label_on_service_account(clean):
    clean["service_accounts"][0]["metadata"]["labels"] = {"azure.workload.identity/use": "true"}
    assert codes(tm.build_trust_map(clean)) == [("label-on-serviceaccount", "ServiceAccount/orders/orders-api")]
    assert tm.build_trust_map(clean)["findings"][0]["severity"] == "info"  # its workloads are labelled
    clean["workloads"] = [deployment(template_labels={})]
    result = tm.build_trust_map(clean)
    assert codes(result) == [
        ("workload-label-missing", "Deployment/orders/orders-api"),
        ("label-on-serviceaccount", "ServiceAccount/orders/orders-api"),
    ]
    assert result["findings"][1]["severity"] == "warning"
    assert "preview" in result["findings"][0]["message"]


def test_running_pod_with_stale_client_id(clean):
    clean["pods"].append(pod("orders-api-old-xyz", OTHER_CLIENT_ID))
    clean["pods"].append(pod("orders-api-done", OTHER_CLIENT_ID, phase="Succeeded"))  # finished: ignored
    clean["pods"].append(pod("bare", CLIENT_ID.upper(), owner=None))  # same ID, other case: fine
    result = tm.build_trust_map(clean)
    assert codes(result) == [("pod-client-id-stale", "Pod/orders/orders-api-old-xyz")]
    assert "rollout restart" in result["findings"][0]["fix"]
    assert [p["stale"] for p in result["map"][0]["pods"]] == [False, False, True]


@pytest.mark.parametrize("value", ["100", "90000", "soon"])
def test_token_expiration_out_of_range(clean, value):
    clean["service_accounts"][0]["metadata"]["annotations"][
        "azure.workload.identity/service-account-token-expiration"
    ] = value
    result = tm.build_trust_map(clean)
    assert codes(result) == [("token-expiration-out-of-range", "ServiceAccount/orders/orders-api")]


def test_token_expiration_on_pod_template(clean):
    clean["workloads"][0]["document"]["spec"]["template"]["metadata"]["annotations"] = {
        "azure.workload.identity/service-account-token-expiration": "600"
    }
    assert codes(tm.build_trust_map(clean)) == [("token-expiration-out-of-range", "Deployment/orders/orders-api")]


def test_token_expiration_in_range_is_fine(clean):
    clean["service_accounts"][0]["metadata"]["annotations"][
        "azure.workload.identity/service-account-token-expiration"
    ] = "86400"
    assert tm.build_trust_map(clean)["findings"] == []


@pytest.mark.parametrize("count, severity", [(15, None), (16, "warning"), (20, "error")])
def test_credential_budget(clean, count, severity):
    # GitHub Actions credentials: not Kubernetes subjects, so only the count matters.
    clean["identities"][0]["credentials"] += [
        credential(f"gh-{n}", issuer="https://token.actions.githubusercontent.com", subject=f"repo:o/r:env:{n}")
        for n in range(count - 1)
    ]
    result = tm.build_trust_map(clean)
    expected = [] if severity is None else [("credential-budget", "UserAssignedIdentity/rg-apps/id-orders")]
    assert codes(result) == expected
    if severity:
        assert result["findings"][0]["severity"] == severity
    assert codes(tm.build_trust_map(clean, credential_warning_threshold=30)) == (expected if count == 20 else [])


def test_pod_identity_leftovers_and_their_migration(clean):
    resource_id = (
        f"{SUBSCRIPTION}/resourcegroups/rg-legacy/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-legacy"
    )
    clean["pod_identity"] = {
        "identities": [
            {
                "metadata": {"namespace": "orders", "name": "legacy"},
                "spec": {"type": 0, "resourceID": resource_id, "clientID": OTHER_CLIENT_ID},
            }
        ],
        "bindings": [
            {
                "metadata": {"namespace": "orders", "name": "legacy-binding"},
                "spec": {"azureIdentity": "legacy", "selector": "legacy-app"},
            }
        ],
    }
    clean["workloads"].append(
        deployment("legacy-app", service_account="default", template_labels={"aadpodidbinding": "legacy-app"})
    )
    result = tm.build_trust_map(clean)
    assert codes(result) == [
        ("pod-identity-leftover", "AzureIdentity/orders/legacy"),
        ("pod-identity-leftover", "AzureIdentityBinding/orders/legacy-binding"),
        ("pod-identity-leftover", "Deployment/orders/legacy-app"),
    ]
    fix = result["findings"][2]["fix"]
    assert "orders/default" in fix and OTHER_CLIENT_ID in fix and "id-legacy (resource group rg-legacy)" in fix
    assert result["pod_identity_migration"] == [
        {
            "binding": "orders/legacy-binding",
            "azure_identity": "legacy",
            "selector": "legacy-app",
            "client_id": OTHER_CLIENT_ID,
            "resource_id": resource_id,
            "workloads": [
                {"kind": "Deployment", "namespace": "orders", "name": "legacy-app", "service_account": "default"}
            ],
        }
    ]


def test_namespaces_limit_what_is_judged(clean):
    clean["identities"][0]["credentials"].append(credential("fic-else", subject="system:serviceaccount:else:gone"))
    clean["service_accounts"].append(
        service_account("else", "x", annotations={"azure.workload.identity/client-id": OTHER_CLIENT_ID})
    )
    assert len(tm.build_trust_map(clean)["findings"]) == 2
    clean["namespaces"] = ["orders"]
    assert tm.build_trust_map(clean)["findings"] == []


def test_other_known_cluster_is_not_judged_against_these_service_accounts(clean):
    clean["issuer_urls"] = [OLD_ISSUER]
    clean["identities"][0]["credentials"].append(
        credential("fic-dr", issuer=OLD_ISSUER, subject="system:serviceaccount:dr:x")
    )
    result = tm.build_trust_map(clean)
    assert result["findings"] == []
    assert [c["name"] for c in result["map"][0]["credentials"]] == ["fic-orders"]


def test_without_known_issuers_only_subjects_are_checked(clean):
    clean["clusters"], clean["cluster_issuer"] = [], None
    clean["identities"][0]["credentials"].append(
        credential("fic-x", issuer=OLD_ISSUER, subject="system:serviceaccount:orders:gone")
    )
    assert codes(tm.build_trust_map(clean)) == [
        ("credential-orphaned", "FederatedIdentityCredential/rg-apps/id-orders/fic-x")
    ]


def test_issuer_from_the_single_cluster_when_the_api_server_does_not_say(clean):
    clean["cluster_issuer"] = None
    assert tm.build_trust_map(clean)["findings"] == []


def test_unreadable_credentials_are_not_judged(clean):
    clean["identities"][0]["credentials"] = None
    result = tm.build_trust_map(clean)
    assert result["findings"] == []
    assert result["identities"][0]["credential_count"] is None


def test_findings_are_sorted_and_shaped(clean):
    planted = copy.deepcopy(clean)
    planted["identities"][0]["credentials"].append(credential("fic-gone", subject="system:serviceaccount:orders:gone"))
    planted["workloads"].append(deployment("worker", template_labels={}))
    result = tm.build_trust_map(planted)
    assert [f["severity"] for f in result["findings"]] == ["error", "warning"]
    for item in result["findings"]:
        assert set(item) == {"severity", "code", "subject", "message", "fix"}
        assert item["code"] in tm.CODES
    assert result["summary"]["by_code"] == {"credential-orphaned": 1, "workload-label-missing": 1}
    assert tm.build_trust_map(planted) == result  # deterministic: same input, same output


# --- Identity bindings ------------------------------------------------------------------------------------------------
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
BINDING_ISSUER = f"https://eastus.oic.prod-aks.azure.com/{TENANT}/{CLIENT_ID}"
IDENTITY_ID = (
    f"{SUBSCRIPTION}/resourceGroups/rg-apps/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-orders"
)
USE_BINDING = "azure.workload.identity/use-identity-binding"
OUR_ROLE = f"azure-wi-identity-binding-{CLIENT_ID}"


def binding(name="idorders", cluster="aks-prod", client_id=CLIENT_ID, identity_id=IDENTITY_ID):
    """A binding as trust_inventory returns it (gateway normalisation plus the cluster it was listed on)."""
    return {
        "id": f"{SUBSCRIPTION}/resourcegroups/rg-apps/providers/Microsoft.ContainerService/managedClusters/{cluster}"
        f"/identityBindings/{name}",
        "name": name,
        "identity_id": identity_id,
        "client_id": client_id,
        "issuer_url": BINDING_ISSUER,
        "provisioning_state": "Succeeded",
        "cluster_resource_group": "rg-apps",
        "cluster_name": cluster,
    }


def cluster_role(name=OUR_ROLE, client_ids=(CLIENT_ID,), **rule):
    base = {"api_groups": ["cid.wi.aks.azure.com"], "resources": list(client_ids), "verbs": ["use-managed-identity"]}
    return {"name": name, "rules": [{**base, **rule}], "aggregated": False, "labels": {}}


def cluster_role_binding(name=OUR_ROLE, role=OUR_ROLE, subjects=None):
    return {
        "name": name,
        "role_ref": {"api_group": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "batch", "namespace": "orders"}]
        if subjects is None
        else subjects,
        "labels": {},
    }


def opted_in(name="batch", service_account="batch"):
    """A Deployment whose pod template opts in to the identity binding."""
    workload = deployment(name, service_account=service_account)
    workload["document"]["spec"]["template"]["metadata"]["annotations"] = {USE_BINDING: "true"}
    return workload


@pytest.fixture
def bound(clean) -> dict:
    """The clean set-up plus ServiceAccount orders/batch reaching the same identity through its binding: AKS's
    credential on the identity, the binding on the cluster, our RBAC for orders/batch, an opted-in Deployment."""
    clean["identities"][0]["id"] = IDENTITY_ID
    clean["identities"][0]["credentials"].append(
        credential("aks-identity-binding", issuer=BINDING_ISSUER, subject=CLIENT_ID)
    )
    clean["service_accounts"].append(
        service_account(name="batch", annotations={"azure.workload.identity/client-id": CLIENT_ID})
    )
    clean["workloads"].append(opted_in())
    clean["identity_bindings"] = [binding()]
    clean["cluster_roles"] = [cluster_role(), {"name": "view", "rules": [{"verbs": ["get"], "resources": ["pods"]}]}]
    clean["cluster_role_bindings"] = [cluster_role_binding()]
    return clean


def entry_of(result: dict, name: str) -> dict:
    return next(e for e in result["map"] if e["service_account"] == name)


def test_binding_setup_is_clean_and_mapped(bound):
    result = tm.build_trust_map(bound)
    assert result["findings"] == []
    batch = entry_of(result, "batch")
    assert batch["via"] == "identity_binding" and batch["credentials"] == []
    expected_binding = {
        "cluster_resource_group": "rg-apps",
        "cluster_name": "aks-prod",
        "name": "idorders",
        "issuer_url": BINDING_ISSUER,
        "provisioning_state": "Succeeded",
    }
    assert batch["bindings"] == [expected_binding]
    assert batch["rbac_grants"] == [
        {"cluster_role": OUR_ROLE, "cluster_role_binding": OUR_ROLE, "subject": "ServiceAccount/orders/batch"}
    ]
    assert batch["workloads"] == [{"kind": "Deployment", "name": "batch", "labelled": True, "identity_binding": True}]
    # orders-api has its own credential and no grant; AKS's credential is attached to no ServiceAccount.
    orders = entry_of(result, "orders-api")
    assert orders["via"] == "federated_credential" and orders["bindings"] == [expected_binding]
    assert [c["name"] for c in orders["credentials"]] == ["fic-orders"]
    [identity] = result["identities"]
    assert identity["bindings"] == [expected_binding]
    assert identity["rbac_grants"] == [
        {"cluster_role": OUR_ROLE, "cluster_role_binding": OUR_ROLE, "subjects": ["ServiceAccount/orders/batch"]}
    ]
    assert result["identity_bindings"] == [
        {**expected_binding, "identity_id": IDENTITY_ID, "client_id": CLIENT_ID, "identity": "id-orders"}
    ]
    assert result["rbac_grants"] == [
        {
            "client_id": CLIENT_ID,
            "cluster_role": OUR_ROLE,
            "cluster_role_binding": OUR_ROLE,
            "subjects": ["ServiceAccount/orders/batch"],
            "identity": "id-orders",
        }
    ]
    assert result["summary"]["identity_bindings"] == 1


def test_a_service_account_with_credential_and_grant_reaches_by_both(bound):
    bound["cluster_role_bindings"][0]["subjects"].append(
        {"kind": "ServiceAccount", "name": "orders-api", "namespace": "orders"}
    )
    result = tm.build_trust_map(bound)
    assert result["findings"] == []
    assert entry_of(result, "orders-api")["via"] == "both"


@pytest.mark.parametrize(
    "subject",
    [
        CLIENT_ID,  # the lab's choice
        "system:serviceaccount:kube-system:aks-identity-binding",  # shaped like a ServiceAccount's: still AKS's
    ],
)
def test_the_binding_credential_is_never_orphaned(bound, subject):
    bound["identities"][0]["credentials"][-1]["subject"] = subject
    assert tm.build_trust_map(bound)["findings"] == []
    # Nor judged at all when bindings were not read.
    bound["identity_bindings"] = None
    assert tm.build_trust_map(bound)["findings"] == []


def test_the_binding_credential_of_an_identity_no_audited_cluster_binds(bound):
    bound["workloads"].pop()  # the bound ServiceAccount and its workload are gone
    bound["service_accounts"].pop()
    bound["cluster_role_bindings"] = []
    bound["identity_bindings"] = [binding(client_id=OTHER_CLIENT_ID, identity_id=IDENTITY_ID.replace("orders", "x"))]
    result = tm.build_trust_map(bound)
    assert codes(result) == [
        ("identity-binding-credential-unbound", "FederatedIdentityCredential/rg-apps/id-orders/aks-identity-binding")
    ]
    note = result["findings"][0]
    assert note["severity"] == "info"
    assert "no audited cluster (rg-apps/aks-prod) binds the identity" in note["message"]
    assert "may serve a binding on another cluster" in note["message"]
    assert "only once no cluster binds the identity" in note["fix"]


def test_a_binding_on_another_audited_cluster_keeps_the_credential_but_not_the_pods(bound):
    bound["clusters"].append({"resource_group": "rg-apps", "name": "aks-dr", "issuer_url": OLD_ISSUER})
    bound["identity_bindings"] = [binding(cluster="aks-dr")]
    result = tm.build_trust_map(bound)
    assert codes(result) == [
        ("identity-binding-missing", "Deployment/orders/batch"),
        ("identity-binding-access-stale", f"ClusterRoleBinding/{OUR_ROLE}"),
    ]
    missing, stale = result["findings"]
    assert missing["severity"] == "error" and stale["severity"] == "info"
    assert (
        "no identity binding on cluster rg-apps/aks-prod (only 'idorders' on cluster rg-apps/aks-dr)"
        in (missing["message"])
    )
    assert "aks.workload_identity.aks_identity_binding" in missing["fix"] and "id-orders" in missing["fix"]
    assert "id-orders has no identity binding on cluster rg-apps/aks-prod" in stale["message"]
    assert entry_of(result, "batch")["via"] == "none" and entry_of(result, "batch")["bindings"] == []
    assert len(result["identities"][0]["bindings"]) == 1  # the identity still shows its binding on aks-dr


def test_opted_in_pods_without_a_grant(bound):
    bound["cluster_role_bindings"][0]["subjects"] = [{"kind": "ServiceAccount", "name": "other", "namespace": "orders"}]
    result = tm.build_trust_map(bound)
    # Only the grant is missing: no annotation-no-credential, as every workload of batch opts in to the binding.
    assert codes(result) == [("identity-binding-access-missing", "ServiceAccount/orders/batch")]
    finding = result["findings"][0]
    assert finding["severity"] == "error"
    assert "Deployment batch opt in" in finding["message"] and "token proxy refuses" in finding["message"]
    assert f"use-managed-identity on cid.wi.aks.azure.com/{CLIENT_ID}" in finding["message"]
    assert "aks.workload_identity.wid_identity_binding_access" in finding["fix"]
    assert "federation: identity_binding" in finding["fix"]
    assert entry_of(result, "batch")["via"] == "none"
    other = entry_of(result, "other")  # named by the grant: in the map, though it does not exist
    assert not other["service_account_exists"] and other["via"] == "identity_binding"


def test_rbac_not_readable_is_not_judged(bound):
    bound["cluster_roles"] = bound["cluster_role_bindings"] = None
    result = tm.build_trust_map(bound)
    assert result["findings"] == [] and result["rbac_grants"] is None
    assert entry_of(result, "batch")["via"] == "none"


@pytest.mark.parametrize(
    "subject, granted",
    [
        ({"kind": "Group", "name": "system:serviceaccounts:orders", "apiGroup": "rbac.authorization.k8s.io"}, True),
        ({"kind": "Group", "name": "system:serviceaccounts"}, True),
        ({"kind": "Group", "name": "system:authenticated"}, True),
        ({"kind": "User", "name": "system:serviceaccount:orders:batch"}, True),
        ({"kind": "Group", "name": "system:serviceaccounts:payments"}, False),
        ({"kind": "Group", "name": "system:serviceaccounts:"}, False),
        ({"kind": "Group", "name": "developers"}, False),
        ({"kind": "User", "name": "system:serviceaccount:orders:Batch"}, False),
        ({"kind": "ServiceAccount", "name": "batch", "namespace": "payments"}, False),
    ],
)
def test_which_subjects_grant_a_service_account(bound, subject, granted):
    bound["cluster_role_bindings"] = [cluster_role_binding("hand-made", subjects=[subject])]
    result = tm.build_trust_map(bound)
    missing = ("identity-binding-access-missing", "ServiceAccount/orders/batch")
    assert (missing not in codes(result)) is granted
    assert (entry_of(result, "batch")["via"] == "identity_binding") is granted


@pytest.mark.parametrize(
    "rule, granted",
    [
        ({}, True),
        ({"verbs": ["*"]}, True),
        ({"api_groups": ["*"], "resources": ["*"], "verbs": ["*"]}, True),  # cluster-admin's rule
        ({"resources": [CLIENT_ID.upper()]}, True),  # client IDs compare ignoring case
        ({"verbs": ["get"]}, False),
        ({"api_groups": ["rbac.authorization.k8s.io"]}, False),
        ({"resources": [OTHER_CLIENT_ID]}, False),
        ({"resource_names": [CLIENT_ID]}, False),  # the proxy's review names no object
    ],
)
def test_grants_are_found_by_rule_content_whatever_the_names(bound, rule, granted):
    bound["cluster_roles"] = [cluster_role("my-own-role", **rule)]
    bound["cluster_role_bindings"] = [cluster_role_binding("my-own-binding", role="my-own-role")]
    result = tm.build_trust_map(bound)
    assert entry_of(result, "batch")["via"] == ("identity_binding" if granted else "none")
    if granted:
        assert entry_of(result, "batch")["rbac_grants"][0]["cluster_role_binding"] == "my-own-binding"


def test_a_binding_that_refers_to_a_role_of_another_kind_or_a_missing_one_grants_nothing(bound):
    bound["cluster_role_bindings"] = [
        cluster_role_binding("missing-role", role="gone"),
        {**cluster_role_binding("odd"), "role_ref": {"kind": "Role", "name": OUR_ROLE}},
    ]
    assert codes(tm.build_trust_map(bound)) == [("identity-binding-access-missing", "ServiceAccount/orders/batch")]


def test_a_grant_for_a_client_id_no_identity_has_is_stale(bound):
    bound["cluster_roles"].append(cluster_role("stale", client_ids=(OTHER_CLIENT_ID,)))
    bound["cluster_role_bindings"].append(cluster_role_binding("stale", role="stale"))
    result = tm.build_trust_map(bound)
    assert codes(result) == [("identity-binding-access-stale", "ClusterRoleBinding/stale")]
    stale = result["findings"][0]
    assert stale["severity"] == "info"
    assert f"client ID {OTHER_CLIENT_ID}" in stale["message"]
    assert "no managed identity in resource group rg-apps has that client ID" in stale["message"]
    assert "no identity binding on cluster rg-apps/aks-prod maps it" in stale["message"]
    assert next(g for g in result["rbac_grants"] if g["client_id"] == OTHER_CLIENT_ID)["identity"] is None
    # A grant in a namespace outside the audit's is not judged; one for every ServiceAccount is.
    bound["namespaces"] = ["payments"]
    assert codes(tm.build_trust_map(bound)) == []
    bound["cluster_role_bindings"][-1]["subjects"] = [{"kind": "Group", "name": "system:serviceaccounts"}]
    assert codes(tm.build_trust_map(bound)) == [("identity-binding-access-stale", "ClusterRoleBinding/stale")]


def test_a_grant_to_a_bound_identity_outside_the_audited_groups_is_not_stale(bound):
    bound["cluster_roles"].append(cluster_role("elsewhere", client_ids=(OTHER_CLIENT_ID,)))
    bound["cluster_role_bindings"].append(cluster_role_binding("elsewhere", role="elsewhere"))
    bound["identity_bindings"].append(binding("idother", client_id=OTHER_CLIENT_ID, identity_id="/x/other"))
    assert tm.build_trust_map(bound)["findings"] == []


def test_a_service_account_reaching_by_binding_needs_no_credential_unless_a_workload_skips_the_binding(bound):
    bound["workloads"].pop()
    assert tm.build_trust_map(bound)["findings"] == []  # granted and bound, no workload yet
    bound["workloads"].append(deployment("direct", service_account="batch"))
    result = tm.build_trust_map(bound)
    assert codes(result) == [("annotation-no-credential", "ServiceAccount/orders/batch")]
    assert "Deployment direct do not opt in" in result["findings"][0]["message"]
    assert USE_BINDING in result["findings"][0]["fix"]


def test_a_bare_pod_opting_in_is_judged_like_a_workload(bound):
    bound["workloads"].pop()
    bare = pod("bare-batch", CLIENT_ID, service_account="batch", owner=None)
    bare["metadata"]["annotations"] = {USE_BINDING: "true"}
    bound["pods"].append(bare)
    bound["cluster_role_bindings"] = []  # the ClusterRole alone grants nothing
    result = tm.build_trust_map(bound)
    assert codes(result) == [("identity-binding-access-missing", "ServiceAccount/orders/batch")]
    assert "Pod bare-batch opt in" in result["findings"][0]["message"]


@pytest.mark.parametrize("count, severity", [(16, "warning"), (17, "warning"), (20, "error")])
def test_credential_budget_advises_an_identity_binding(clean, count, severity):
    clean["identities"][0]["credentials"] += [
        credential(f"fic-{n}", subject=f"system:serviceaccount:orders:sa-{n}") for n in range(count - 1)
    ]
    clean["service_accounts"] += [service_account(name=f"sa-{n}") for n in range(count - 1)]
    result = tm.build_trust_map(clean)
    assert codes(result) == [("credential-budget", "UserAssignedIdentity/rg-apps/id-orders")]
    finding = result["findings"][0]
    assert finding["severity"] == severity
    assert f"{count} of the 20" in finding["message"] and f"{count} of them for Kubernetes" in finding["message"]
    assert finding["fix"].startswith("Move its Kubernetes ServiceAccounts to an identity binding: one credential")
    assert "federation: identity_binding" in finding["fix"]
    # Bound already: the advice names its binding.
    clean["identities"][0]["id"] = IDENTITY_ID
    clean["identity_bindings"] = [binding()]
    fix = tm.build_trust_map(clean)["findings"][0]["fix"]
    assert fix.startswith("Move its Kubernetes ServiceAccounts to its identity binding ('idorders' on cluster")


@pytest.mark.parametrize(
    "subject, expected",
    [
        ({"kind": "ServiceAccount", "name": "a", "namespace": "n"}, ("n", "a")),
        ({"kind": "ServiceAccount", "name": "a"}, None),
        ({"kind": "User", "name": "system:serviceaccount:n:a"}, ("n", "a")),
        ({"kind": "User", "name": "alice"}, None),
        ({"kind": "Group", "name": "system:serviceaccounts:n"}, ("n", None)),
        ({"kind": "Group", "name": "system:serviceaccounts"}, (None, None)),
        ({"kind": "Group", "name": "system:authenticated"}, (None, None)),
        ({"kind": "Group", "name": "system:masters"}, None),
    ],
)
def test_rbac_subjects(subject, expected):
    assert tm.rbac_subject_service_accounts(subject) == expected


def test_every_code_is_documented_in_wid_info():
    import yaml

    from ansible_collections.aks.workload_identity.plugins.modules import wid_info

    documented = yaml.safe_load(wid_info.RETURN)["findings"]["contains"]["code"]["choices"]
    assert sorted(documented) == sorted(tm.CODES)
    via = yaml.safe_load(wid_info.RETURN)["map"]["contains"]["via"]["choices"]
    assert sorted(via) == sorted([tm.VIA_CREDENTIAL, tm.VIA_BINDING, tm.VIA_BOTH, tm.VIA_NONE])
