"""boto3 sees AWS's answers where kmsgate once differed from AWS KMS:
well-formed multi-Region ids, `:` in alias names, and aliases given to
operations that take only a key id or key ARN."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT_ID, KEY_ARN_PREFIX, REGION

pytestmark = pytest.mark.boto3

MRK = "mrk-0123456789abcdef0123456789abcdef"
GRANTEE = f"arn:aws:iam::{ACCOUNT_ID}:user/app"


def error_of(excinfo) -> tuple[str, str | None]:
    err = excinfo.value.response["Error"]
    return err.get("Code"), err.get("Message")


@pytest.mark.parametrize("key_id", [MRK, KEY_ARN_PREFIX + MRK])
def test_a_well_formed_multi_region_id_is_a_key_that_does_not_exist(kms, key_id):
    expected = ("NotFoundException", f"Key '{KEY_ARN_PREFIX}{MRK}' does not exist")
    with pytest.raises(ClientError) as excinfo:
        kms.describe_key(KeyId=key_id)
    assert error_of(excinfo) == expected
    with pytest.raises(ClientError) as excinfo:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert error_of(excinfo) == expected
    with pytest.raises(ClientError) as excinfo:
        kms.enable_key_rotation(KeyId=key_id)
    assert error_of(excinfo) == expected


def test_a_malformed_multi_region_id_is_an_invalid_key_id(kms):
    with pytest.raises(ClientError) as excinfo:
        kms.describe_key(KeyId="mrk-fake-key-id")
    assert error_of(excinfo) == ("NotFoundException", "Invalid keyId 'mrk-fake-key-id'")


def test_a_colon_in_an_alias_name_is_refused(kms, key_arn):
    name = f"alias/compat-{uuid.uuid4().hex[:8]}:x"
    expected = ("ValidationException", f"{name} contains invalid characters for an alias")
    with pytest.raises(ClientError) as excinfo:
        kms.create_alias(AliasName=name, TargetKeyId=key_arn)
    assert error_of(excinfo) == expected
    with pytest.raises(ClientError) as excinfo:
        kms.update_alias(AliasName=name, TargetKeyId=key_arn)
    assert error_of(excinfo) == expected
    with pytest.raises(ClientError) as excinfo:
        kms.delete_alias(AliasName=name)
    assert error_of(excinfo) == expected
    pages = kms.get_paginator("list_aliases").paginate()
    names = [a["AliasName"] for page in pages for a in page["Aliases"]]
    assert name not in names

    allowed = f"alias/compat-{uuid.uuid4().hex[:8]}/A_b-9"
    kms.create_alias(AliasName=allowed, TargetKeyId=key_arn)
    assert kms.describe_key(KeyId=allowed)["KeyMetadata"]["Arn"] == key_arn


# Operations whose KeyId the model documents as "key ID or key ARN", each
# with a harmless rest of the request.
KEY_ID_OR_ARN_ONLY = {
    "enable_key": {},
    "disable_key": {},
    "enable_key_rotation": {},
    "disable_key_rotation": {},
    "get_key_rotation_status": {},
    "list_key_rotations": {},
    "rotate_key_on_demand": {},
    "schedule_key_deletion": {"PendingWindowInDays": 7},
    "cancel_key_deletion": {},
    "get_key_policy": {"PolicyName": "default"},
    "list_key_policies": {},
    "create_grant": {"GranteePrincipal": GRANTEE, "Operations": ["Encrypt"]},
    "list_grants": {},
    "list_aliases": {},
}


@pytest.fixture(scope="module")
def aliased_key(kms):
    """A fresh key of its own (these tests must see it unchanged) and an
    alias naming it."""
    arn = kms.create_key(Description="compat divergences")["KeyMetadata"]["Arn"]
    alias = f"alias/compat-{uuid.uuid4().hex[:12]}"
    kms.create_alias(AliasName=alias, TargetKeyId=arn)
    return arn, alias


def state_of(kms, arn):
    meta = kms.describe_key(KeyId=arn)["KeyMetadata"]
    return (
        meta["KeyState"],
        meta.get("DeletionDate"),
        kms.get_key_rotation_status(KeyId=arn)["KeyRotationEnabled"],
        kms.list_key_rotations(KeyId=arn)["Rotations"],
        [g["GrantId"] for g in kms.list_grants(KeyId=arn)["Grants"]],
    )


@pytest.mark.parametrize("operation", sorted(KEY_ID_OR_ARN_ONLY))
def test_key_id_or_arn_operations_refuse_an_alias(kms, aliased_key, operation):
    arn, alias = aliased_key
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{alias}"
    call = getattr(kms, operation)
    before = state_of(kms, arn)
    with pytest.raises(ClientError) as excinfo:
        call(KeyId=alias, **KEY_ID_OR_ARN_ONLY[operation])
    assert error_of(excinfo) == ("NotFoundException", f"Invalid keyId '{alias}'")
    with pytest.raises(ClientError) as excinfo:
        call(KeyId=alias_arn, **KEY_ID_OR_ARN_ONLY[operation])
    assert error_of(excinfo) == ("NotFoundException", f"Invalid arn {alias_arn}")
    assert state_of(kms, arn) == before
    # DescribeKey takes any KeyId and still follows the alias.
    assert kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"] == arn
