"""Key policies and grants through boto3: the typed exceptions and shapes
botocore expects, against kmsgate's one development principal (`dev`,
whose identity policy allows kms:*)."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT_ID

pytestmark = pytest.mark.boto3

DEV = f"arn:aws:iam::{ACCOUNT_ID}:user/dev"
ROOT = f"arn:aws:iam::{ACCOUNT_ID}:root"


def error_of(excinfo) -> tuple[str, str | None]:
    err = excinfo.value.response["Error"]
    return err.get("Code"), err.get("Message")


def policy(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


ADMIN = {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"}


def test_key_policies_put_get_list_and_an_explicit_deny(kms):
    arn = kms.create_key(Description="policy compat")["KeyMetadata"]["Arn"]
    got = kms.get_key_policy(KeyId=arn, PolicyName="default")
    assert got["PolicyName"] == "default"
    assert json.loads(got["Policy"])["Statement"][0]["Principal"] == {"AWS": ROOT}
    assert kms.list_key_policies(KeyId=arn)["PolicyNames"] == ["default"]

    deny = policy(
        ADMIN,
        {"Sid": "NoDecrypt", "Effect": "Deny", "Principal": {"AWS": DEV}, "Action": "kms:Decrypt", "Resource": "*"},
    )
    kms.put_key_policy(KeyId=arn, PolicyName="default", Policy=deny)
    assert kms.get_key_policy(KeyId=arn)["Policy"] == deny
    blob = kms.encrypt(KeyId=arn, Plaintext=b"x")["CiphertextBlob"]
    # AccessDeniedException is not in the KMS model: botocore raises a plain
    # ClientError carrying its name.
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob)
    assert error_of(e) == (
        "AccessDeniedException",
        f"User: {DEV} is not authorized to perform: kms:Decrypt on resource: {arn} "
        "with an explicit deny in a resource-based policy",
    )


def test_a_lockout_or_malformed_policy_is_refused_and_changes_nothing(kms):
    arn = kms.create_key(Description="lockout compat")["KeyMetadata"]["Arn"]
    before = kms.get_key_policy(KeyId=arn)["Policy"]
    lockout = policy({"Effect": "Allow", "Principal": {"AWS": DEV}, "Action": "kms:Encrypt", "Resource": "*"})
    with pytest.raises(kms.exceptions.MalformedPolicyDocumentException) as e:
        kms.put_key_policy(KeyId=arn, PolicyName="default", Policy=lockout)
    assert error_of(e)[1] == "The new key policy will not allow you to update the key policy in the future."
    with pytest.raises(kms.exceptions.MalformedPolicyDocumentException):
        kms.put_key_policy(KeyId=arn, PolicyName="default", Policy="{not json")
    with pytest.raises(ClientError) as e:
        kms.create_key(Policy=lockout)
    assert error_of(e)[0] == "MalformedPolicyDocumentException"
    assert kms.get_key_policy(KeyId=arn)["Policy"] == before


def test_grants_create_list_retire_and_revoke(kms):
    arn = kms.create_key(Description="grant compat")["KeyMetadata"]["Arn"]
    made = kms.create_grant(
        KeyId=arn,
        GranteePrincipal=DEV,
        RetiringPrincipal=DEV,
        Operations=["Decrypt", "Encrypt"],
        Constraints={"EncryptionContextSubset": {"tenant": "7"}},
        Name="compat-grant",
    )
    assert len(made["GrantId"]) == 64 and made["GrantToken"]
    blob = kms.encrypt(
        KeyId=arn, Plaintext=b"g", EncryptionContext={"tenant": "7"}, GrantTokens=[made["GrantToken"]]
    )["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "7"})["Plaintext"] == b"g"

    grants = kms.list_grants(KeyId=arn)["Grants"]
    assert [g["GrantId"] for g in grants] == [made["GrantId"]]
    g = grants[0]
    assert g["KeyId"] == arn
    assert g["Name"] == "compat-grant"
    assert g["GranteePrincipal"] == DEV and g["RetiringPrincipal"] == DEV
    assert g["Operations"] == ["Decrypt", "Encrypt"]
    assert g["Constraints"] == {"EncryptionContextSubset": {"tenant": "7"}}
    assert g["IssuingAccount"] == ROOT
    retirable = kms.list_retirable_grants(RetiringPrincipal=DEV)["Grants"]
    assert made["GrantId"] in [r["GrantId"] for r in retirable]

    kms.retire_grant(GrantToken=made["GrantToken"])
    assert kms.list_grants(KeyId=arn)["Grants"] == []
    second = kms.create_grant(KeyId=arn, GranteePrincipal=DEV, Operations=["DescribeKey"])
    kms.revoke_grant(KeyId=arn, GrantId=second["GrantId"])
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.revoke_grant(KeyId=arn, GrantId=second["GrantId"])
    with pytest.raises(kms.exceptions.InvalidGrantTokenException):
        kms.retire_grant(GrantToken="not-a-token")
    with pytest.raises(kms.exceptions.InvalidGrantIdException):
        kms.revoke_grant(KeyId=arn, GrantId="short")
