"""boto3 (the AWS SDK for Python) works against kmsgate unchanged."""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT_ID, KEY_ARN_PREFIX, NO_RETRIES, REGION

pytestmark = pytest.mark.boto3

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
KEY_ARN = re.compile(rf"^arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/({UUID})$")
CONTEXT = {"Purpose": "Test", "Tenant": "compat"}


def error_of(excinfo) -> tuple[str, str | None]:
    err = excinfo.value.response["Error"]
    return err.get("Code"), err.get("Message")


def test_create_key_returns_the_metadata_aws_returns_for_a_symmetric_key(kms):
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    meta = kms.create_key(Description="created by test_boto3")["KeyMetadata"]

    m = KEY_ARN.match(meta["Arn"])
    assert m, f"Arn {meta['Arn']!r} is not arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/<uuid>"
    assert meta["KeyId"] == m.group(1)
    assert meta["AWSAccountId"] == ACCOUNT_ID
    assert meta["Description"] == "created by test_boto3"
    assert meta["Enabled"] is True
    assert meta["KeyState"] == "Enabled"
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["CustomerMasterKeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["KeyManager"] == "CUSTOMER"
    assert meta["Origin"] == "AWS_KMS"
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert meta["MultiRegion"] is False
    assert "DeletionDate" not in meta
    # botocore parses the epoch-seconds CreationDate into a datetime.
    assert isinstance(meta["CreationDate"], dt.datetime)
    assert before <= meta["CreationDate"] <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)


def test_describe_key_by_id_returns_the_same_arn(kms, key_arn):
    key_id = KEY_ARN.match(key_arn).group(1)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["Arn"] == key_arn
    assert meta["KeyId"] == key_id
    assert meta["KeyState"] == "Enabled"


def test_generate_data_key_returns_a_32_byte_key_and_the_key_arn(kms, key_arn):
    resp = kms.generate_data_key(KeyId=key_arn, KeySpec="AES_256", EncryptionContext=CONTEXT)
    assert len(resp["Plaintext"]) == 32
    assert resp["KeyId"] == key_arn
    assert resp["CiphertextBlob"] and resp["CiphertextBlob"] != resp["Plaintext"]
    assert 1 <= len(resp["CiphertextBlob"]) <= 6144


def test_generate_data_key_by_bare_key_id_still_answers_with_the_arn(kms, key_arn):
    key_id = KEY_ARN.match(key_arn).group(1)
    resp = kms.generate_data_key(KeyId=key_id, NumberOfBytes=16)
    assert len(resp["Plaintext"]) == 16
    assert resp["KeyId"] == key_arn


def test_two_data_keys_differ(kms, key_arn):
    a = kms.generate_data_key(KeyId=key_arn, KeySpec="AES_256")
    b = kms.generate_data_key(KeyId=key_arn, KeySpec="AES_256")
    assert a["Plaintext"] != b["Plaintext"]
    assert a["CiphertextBlob"] != b["CiphertextBlob"]


def test_decrypt_with_the_same_context_returns_the_data_key(kms, key_arn):
    gdk = kms.generate_data_key(KeyId=key_arn, KeySpec="AES_256", EncryptionContext=CONTEXT)
    dec = kms.decrypt(CiphertextBlob=gdk["CiphertextBlob"], EncryptionContext=dict(CONTEXT))
    assert dec["Plaintext"] == gdk["Plaintext"]
    assert dec["KeyId"] == key_arn
    assert dec["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"


@pytest.mark.parametrize(
    "other_context",
    [
        {"Purpose": "Other", "Tenant": "compat"},
        {"Purpose": "Test"},
        {**CONTEXT, "Extra": "x"},
        {},
    ],
    ids=["changed-value", "missing-pair", "extra-pair", "no-context"],
)
def test_decrypt_with_a_different_context_is_invalid_ciphertext(kms, key_arn, other_context):
    gdk = kms.generate_data_key(KeyId=key_arn, KeySpec="AES_256", EncryptionContext=CONTEXT)
    with pytest.raises(ClientError) as excinfo:
        kms.decrypt(CiphertextBlob=gdk["CiphertextBlob"], EncryptionContext=other_context)
    assert error_of(excinfo)[0] == "InvalidCiphertextException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_decrypt_of_a_tampered_blob_is_invalid_ciphertext(kms, key_arn):
    blob = bytearray(kms.encrypt(KeyId=key_arn, Plaintext=b"secret")["CiphertextBlob"])
    blob[-1] ^= 0x01
    with pytest.raises(ClientError) as excinfo:
        kms.decrypt(CiphertextBlob=bytes(blob))
    assert error_of(excinfo)[0] == "InvalidCiphertextException"


def test_describe_key_of_an_unknown_key_is_not_found_with_aws_message(kms):
    missing = str(uuid.uuid4())
    with pytest.raises(ClientError) as excinfo:
        kms.describe_key(KeyId=missing)
    code, message = error_of(excinfo)
    assert code == "NotFoundException"
    assert message == f"Key '{KEY_ARN_PREFIX}{missing}' does not exist"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_encrypt_and_decrypt_round_trip_4096_bytes(kms, key_arn):
    plaintext = os.urandom(4096)
    enc = kms.encrypt(KeyId=key_arn, Plaintext=plaintext, EncryptionContext=CONTEXT)
    assert enc["KeyId"] == key_arn
    assert enc["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert plaintext not in enc["CiphertextBlob"]
    dec = kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=CONTEXT)
    assert dec["Plaintext"] == plaintext
    assert dec["KeyId"] == key_arn


def test_encrypt_of_4097_bytes_is_a_validation_error(kms, key_arn):
    with pytest.raises(ClientError) as excinfo:
        kms.encrypt(KeyId=key_arn, Plaintext=os.urandom(4097))
    assert error_of(excinfo)[0] == "ValidationException"


def test_alias_names_the_key_in_describe_key_and_encrypt(kms, key_arn):
    alias = f"alias/compat-{uuid.uuid4().hex[:12]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key_arn)

    meta = kms.describe_key(KeyId=alias)["KeyMetadata"]
    assert meta["Arn"] == key_arn
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{alias}"
    assert kms.describe_key(KeyId=alias_arn)["KeyMetadata"]["Arn"] == key_arn

    enc = kms.encrypt(KeyId=alias, Plaintext=b"via alias")
    assert enc["KeyId"] == key_arn  # responses name the key, never the alias
    assert kms.decrypt(CiphertextBlob=enc["CiphertextBlob"])["Plaintext"] == b"via alias"

    listed = kms.list_aliases(KeyId=key_arn)["Aliases"]
    assert any(a["AliasName"] == alias and a["AliasArn"] == alias_arn for a in listed)


def test_generate_random_returns_the_requested_number_of_bytes(kms):
    a = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    b = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    assert len(a) == 32 and len(b) == 32
    assert a != b


def test_list_keys_includes_the_created_key(kms, key_arn):
    arns = []
    for page in kms.get_paginator("list_keys").paginate():
        arns += [k["KeyArn"] for k in page["Keys"]]
    assert key_arn in arns


def test_a_wrong_secret_is_an_invalid_signature(gateway):
    wrong = boto3.session.Session(
        aws_access_key_id=gateway.access_key_id,
        aws_secret_access_key="x" * 40,
        region_name=REGION,
    ).client("kms", endpoint_url=gateway.endpoint, config=NO_RETRIES)
    with pytest.raises(ClientError) as excinfo:
        wrong.list_keys()
    assert error_of(excinfo)[0] == "InvalidSignatureException"


def test_an_unknown_access_key_is_unrecognized(gateway):
    stranger = boto3.session.Session(
        aws_access_key_id="AKIA" + "Z" * 16,
        aws_secret_access_key=gateway.secret_access_key,
        region_name=REGION,
    ).client("kms", endpoint_url=gateway.endpoint, config=NO_RETRIES)
    with pytest.raises(ClientError) as excinfo:
        stranger.list_keys()
    assert error_of(excinfo)[0] == "UnrecognizedClientException"


def test_every_response_carries_a_request_id(kms, key_arn):
    ok = kms.describe_key(KeyId=key_arn)["ResponseMetadata"]
    assert ok["RequestId"]
    assert ok["HTTPHeaders"].get("x-amzn-requestid") == ok["RequestId"]

    with pytest.raises(ClientError) as excinfo:
        kms.describe_key(KeyId=str(uuid.uuid4()))
    assert excinfo.value.response["ResponseMetadata"]["RequestId"]
    assert excinfo.value.response["ResponseMetadata"]["RequestId"] != ok["RequestId"]
