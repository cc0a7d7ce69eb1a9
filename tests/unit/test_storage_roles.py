"""Least privilege on storage: one S3 pair per role in Settings (both halves or neither, the single
pair as the fallback), clients signed as the role they are opened for, and the SeaweedFS identities
document granting each role exactly its buckets and actions."""

from __future__ import annotations

import json
import os

import pytest

from tasks.settings import ROLES, SettingsError, load_settings

STACK = {"profile": "stack", "s3_access_key_id": "admin-key", "s3_secret_access_key": "admin-secret"}


def own_pairs(roles=ROLES) -> dict[str, str]:
    out = {}
    for role in roles:
        out[f"s3_{role}_access_key_id"] = f"{role}-key"
        out[f"s3_{role}_secret_access_key"] = f"{role}-secret"
    return out


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("LAKEHOUSE_STATE_DIR", str(tmp_path / "state"))  # no generated secrets there


# ---- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_a_key_id_without_its_secret_is_refused_naming_the_secret(role):
    with pytest.raises(SettingsError) as err:
        load_settings(**STACK, **{f"s3_{role}_access_key_id": "k"})
    assert err.value.key == f"LAKEHOUSE_S3_{role.upper()}_SECRET_ACCESS_KEY"


@pytest.mark.parametrize("role", ROLES)
def test_a_secret_without_its_key_id_is_refused_naming_the_key_id(role, monkeypatch):
    monkeypatch.setenv(f"LAKEHOUSE_S3_{role.upper()}_SECRET_ACCESS_KEY", "s")
    with pytest.raises(SettingsError) as err:
        load_settings(**STACK)
    assert err.value.key == f"LAKEHOUSE_S3_{role.upper()}_ACCESS_KEY_ID"


def test_each_role_signs_with_its_own_pair_and_admin_with_the_single_pair():
    s = load_settings(**STACK, **own_pairs())
    for role in ROLES:
        assert s.s3_credentials(role) == (f"{role}-key", f"{role}-secret")
    assert s.s3_credentials("admin") == ("admin-key", "admin-secret")


def test_a_role_without_a_pair_falls_back_to_the_single_pair():
    s = load_settings(**STACK, **own_pairs(["silver"]))
    assert s.s3_credentials("silver") == ("silver-key", "silver-secret")
    for role in set(ROLES) - {"silver"}:
        assert s.s3_credentials(role) == ("admin-key", "admin-secret")
    assert s.without_role_credentials().s3_credentials("silver") == ("admin-key", "admin-secret")


def test_an_empty_pair_from_the_environment_is_unset(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_S3_GOLD_ACCESS_KEY_ID", "")
    monkeypatch.setenv("LAKEHOUSE_S3_GOLD_SECRET_ACCESS_KEY", "")
    assert load_settings(**STACK).s3_credentials("gold") == ("admin-key", "admin-secret")


def test_an_unknown_role_is_an_error_not_the_admin_pair():
    s = load_settings(**STACK, **own_pairs())
    with pytest.raises(ValueError, match="unknown S3 role"):
        s.s3_credentials("root")  # type: ignore[arg-type]


def test_role_secrets_are_masked_and_passed_to_children_as_they_are(monkeypatch):
    s = load_settings(**STACK, **own_pairs(["ingest"]))
    assert s.redacted()["LAKEHOUSE_S3_INGEST_SECRET_ACCESS_KEY"] == "**********"
    env = s.as_env()
    assert env["LAKEHOUSE_S3_INGEST_SECRET_ACCESS_KEY"] == "ingest-secret"
    assert env["LAKEHOUSE_S3_GOLD_ACCESS_KEY_ID"] == ""  # unset stays unset, over generated pairs
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    child = load_settings()
    assert [child.s3_credentials(r) for r in (*ROLES, "admin")] == [s.s3_credentials(r) for r in (*ROLES, "admin")]


# ---- clients ------------------------------------------------------------------------------------

def test_every_client_signs_as_the_role_it_is_opened_for():
    from tasks.catalog import io_config, s3_client, s3_properties

    s = load_settings(**STACK, **own_pairs())
    for role in (*ROLES, "admin"):
        key, secret = s.s3_credentials(role)
        props = s3_properties(s, role)
        assert (props["s3.access-key-id"], props["s3.secret-access-key"]) == (key, secret)
        assert io_config(s, role).s3.key_id == key
        credentials = s3_client(s, role)._request_signer._credentials
        assert (credentials.access_key, credentials.secret_key) == (key, secret)


def test_the_role_is_required():
    from tasks.catalog import io_config, open_catalog, s3_client, s3_properties

    s = load_settings(**STACK)
    for fn in (io_config, open_catalog, s3_client, s3_properties):
        with pytest.raises(TypeError):
            fn(s)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown S3 role"):
        s3_properties(load_settings(), "bronze")  # type: ignore[arg-type] - even without S3


# ---- the SeaweedFS identities document ------------------------------------------------------------

# The spec, written out here rather than read from infra/storage_roles: per role, per layer bucket,
# which S3 actions it may perform. Reading a bucket is listing it and getting its objects.
READ = {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject"}
WRITE = {"s3:PutObject"}
DELETE = {"s3:DeleteObject"}
# Every writer appends to the audit bucket too (DQ results, lineage events), never deleting there.
EXPECTED = {
    "ingest": {"bronze": READ | WRITE, "audit": READ | WRITE},
    "silver": {"bronze": READ, "silver": READ | WRITE, "audit": READ | WRITE},
    "gold": {"silver": READ, "gold": READ | WRITE, "audit": READ | WRITE},
    "serving": {"bronze": READ, "silver": READ, "gold": READ, "audit": READ},
    "maintenance": {"bronze": READ | WRITE | DELETE, "silver": READ | WRITE | DELETE, "gold": READ | WRITE | DELETE,
                    "audit": READ | WRITE | DELETE},
}
BUCKET_ACTIONS = {"s3:ListBucket", "s3:GetBucketLocation"}  # granted on the bucket, the rest on its objects


def granted(policy: dict, prefix: str) -> dict[str, set[str]]:
    """{layer: actions} an IAM policy allows, checking each action is on the right resource."""
    out: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and set(statement) <= {"Sid", "Effect", "Action", "Resource"}
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        for resource in resources:
            bucket, slash, rest = resource.removeprefix("arn:aws:s3:::").partition("/")
            assert bucket.startswith(f"{prefix}-") and "*" not in bucket, resource
            layer = bucket.removeprefix(f"{prefix}-")
            for action in actions:
                assert "*" not in action, action
                if action in BUCKET_ACTIONS:
                    assert not slash, f"{action} on {resource}: a bucket-level action on objects"
                else:
                    assert (slash, rest) == ("/", "*"), f"{action} on {resource}: an object action on the bucket"
                out.setdefault(layer, set()).add(action)
    return out


def document(**settings):
    from infra.storage_roles import seaweedfs_identities

    return seaweedfs_identities(load_settings(**STACK, **settings))


@pytest.mark.parametrize("prefix", ["lakehouse", "acme-lake"])
def test_each_role_is_granted_exactly_its_buckets_and_actions(prefix):
    doc = document(bucket_prefix=prefix, **own_pairs())
    identities = {i["name"]: i for i in doc["identities"]}
    policies = {p["name"]: json.loads(p["content"]) for p in doc["policies"]}
    assert len(identities) == len(ROLES) + 1 and len(policies) == len(ROLES)
    for role in ROLES:
        ident = identities[f"lakehouse-{role}"]
        assert ident["credentials"] == [{"accessKey": f"{role}-key", "secretKey": f"{role}-secret"}]
        assert not ident.get("actions"), "a role's grants are its policy, never legacy actions (Write implies delete)"
        [name] = ident["policyNames"]
        assert granted(policies[name], prefix) == EXPECTED[role], role


def test_only_maintenance_may_delete_and_serving_writes_nothing():
    doc = document(**own_pairs())
    policies = {p["name"]: granted(json.loads(p["content"]), "lakehouse") for p in doc["policies"]}
    for role in ROLES:
        actions = set().union(*policies[f"lakehouse-{role}"].values())
        assert ("s3:DeleteObject" in actions) == (role == "maintenance"), role
    assert set().union(*policies["lakehouse-serving"].values()) <= READ


def test_the_admin_identity_is_the_single_pair_with_admin_rights():
    [admin] = [i for i in document(**own_pairs())["identities"] if i["name"] == "lakehouse"]
    assert admin["credentials"] == [{"accessKey": "admin-key", "secretKey": "admin-secret"}]
    assert "Admin" in admin["actions"]


def test_a_role_on_the_single_pair_has_no_identity_of_its_own():
    doc = document(**own_pairs(["ingest", "maintenance"]))
    assert [i["name"] for i in doc["identities"]] == ["lakehouse", "lakehouse-ingest", "lakehouse-maintenance"]
    assert "policies" not in document()  # no role pairs: the single admin identity, as before


@pytest.mark.parametrize("clash", ["admin-key", "ingest-key"])
def test_two_identities_never_share_an_access_key(clash):
    with pytest.raises(ValueError, match="s3_gold_access_key_id"):
        document(**{**own_pairs(), "s3_gold_access_key_id": clash})


def test_the_stack_writes_the_document_owner_only(tmp_path):
    from infra.services import SeaweedFS

    settings = load_settings(**STACK, **own_pairs(), state_dir=str(tmp_path / "stack"))
    path = SeaweedFS(settings)._identities()
    assert path.stat().st_mode & 0o777 == 0o600
    from infra.storage_roles import seaweedfs_identities

    assert json.loads(path.read_text()) == seaweedfs_identities(settings)
