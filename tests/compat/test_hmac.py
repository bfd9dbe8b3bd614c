"""HMAC keys through boto3 and the AWS CLI: CreateKey with an HMAC key spec,
GenerateMac and VerifyMac, and the refusals AWS gives for the wrong key."""

from __future__ import annotations

import base64

import pytest
from botocore.exceptions import ClientError

from conftest import KEY_ARN_PREFIX
from test_cli import aws, aws_json

SPECS = [
    ("HMAC_224", "HMAC_SHA_224", 28),
    ("HMAC_256", "HMAC_SHA_256", 32),
    ("HMAC_384", "HMAC_SHA_384", 48),
    ("HMAC_512", "HMAC_SHA_512", 64),
]


def error_of(excinfo) -> tuple[str, str | None]:
    err = excinfo.value.response["Error"]
    return err.get("Code"), err.get("Message")


def create_hmac_key(kms, spec: str) -> dict:
    return kms.create_key(KeySpec=spec, KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]


@pytest.mark.boto3
@pytest.mark.parametrize("spec,algorithm,length", SPECS)
def test_hmac_key_makes_macs_that_verify_and_refuses_a_changed_one(kms, spec, algorithm, length):
    meta = create_hmac_key(kms, spec)
    assert meta["KeySpec"] == spec
    assert meta["CustomerMasterKeySpec"] == spec
    assert meta["KeyUsage"] == "GENERATE_VERIFY_MAC"
    assert meta["MacAlgorithms"] == [algorithm]
    assert "EncryptionAlgorithms" not in meta
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["MacAlgorithms"] == [algorithm]

    message = b"header.payload"
    out = kms.generate_mac(KeyId=meta["KeyId"], MacAlgorithm=algorithm, Message=message)
    assert out["KeyId"] == meta["Arn"]
    assert out["MacAlgorithm"] == algorithm
    assert len(out["Mac"]) == length
    again = kms.generate_mac(KeyId=meta["KeyId"], MacAlgorithm=algorithm, Message=message)
    assert again["Mac"] == out["Mac"]

    ok = kms.verify_mac(KeyId=meta["Arn"], MacAlgorithm=algorithm, Message=message, Mac=out["Mac"])
    assert ok["MacValid"] is True
    assert ok["KeyId"] == meta["Arn"]
    assert ok["MacAlgorithm"] == algorithm

    flipped = bytes([out["Mac"][0] ^ 1]) + out["Mac"][1:]
    with pytest.raises(kms.exceptions.KMSInvalidMacException) as e:
        kms.verify_mac(KeyId=meta["KeyId"], MacAlgorithm=algorithm, Message=message, Mac=flipped)
    assert error_of(e) == ("KMSInvalidMacException", "")


@pytest.mark.boto3
def test_wrong_key_usage_is_refused_both_ways(kms, key_arn):
    hmac = create_hmac_key(kms, "HMAC_256")
    with pytest.raises(kms.exceptions.InvalidKeyUsageException) as e:
        kms.encrypt(KeyId=hmac["KeyId"], Plaintext=b"x")
    assert error_of(e)[1] == f"{hmac['Arn']} key usage is GENERATE_VERIFY_MAC which is not valid for Encrypt."
    with pytest.raises(kms.exceptions.InvalidKeyUsageException) as e:
        kms.generate_data_key(KeyId=hmac["KeyId"], KeySpec="AES_256")
    assert error_of(e)[1].endswith("which is not valid for GenerateDataKey.")
    with pytest.raises(kms.exceptions.InvalidKeyUsageException) as e:
        kms.generate_mac(KeyId=key_arn, MacAlgorithm="HMAC_SHA_256", Message=b"x")
    assert error_of(e)[1] == f"{key_arn} key usage is ENCRYPT_DECRYPT which is not valid for GenerateMac."
    with pytest.raises(kms.exceptions.InvalidKeyUsageException) as e:
        kms.generate_mac(KeyId=hmac["KeyId"], MacAlgorithm="HMAC_SHA_512", Message=b"x")
    assert error_of(e)[1] == "Algorithm HMAC_SHA_512 is incompatible with key spec HMAC_256."
    with pytest.raises(kms.exceptions.UnsupportedOperationException):
        kms.enable_key_rotation(KeyId=hmac["KeyId"])
    with pytest.raises(ClientError) as e:
        kms.create_key(KeySpec="HMAC_256", KeyUsage="ENCRYPT_DECRYPT")
    assert error_of(e)[0] == "ValidationException"


@pytest.mark.cli
def test_aws_cli_generates_and_verifies_a_mac(gateway, tmp_path):
    key = aws_json(
        gateway, "kms", "create-key", "--key-spec", "HMAC_384", "--key-usage", "GENERATE_VERIFY_MAC"
    )["KeyMetadata"]
    assert key["Arn"] == KEY_ARN_PREFIX + key["KeyId"]
    message = tmp_path / "message"
    message.write_bytes(b"webhook body")
    out = aws_json(
        gateway,
        "kms", "generate-mac",
        "--key-id", key["KeyId"],
        "--mac-algorithm", "HMAC_SHA_384",
        "--message", f"fileb://{message}",
    )  # fmt: skip
    mac = tmp_path / "mac"
    mac.write_bytes(base64.b64decode(out["Mac"]))
    assert len(mac.read_bytes()) == 48
    ok = aws_json(
        gateway,
        "kms", "verify-mac",
        "--key-id", key["KeyId"],
        "--mac-algorithm", "HMAC_SHA_384",
        "--message", f"fileb://{message}",
        "--mac", f"fileb://{mac}",
    )  # fmt: skip
    assert ok["MacValid"] is True
    message.write_bytes(b"webhook body, changed")
    bad = aws(
        gateway,
        "kms", "verify-mac",
        "--key-id", key["KeyId"],
        "--mac-algorithm", "HMAC_SHA_384",
        "--message", f"fileb://{message}",
        "--mac", f"fileb://{mac}",
        check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "KMSInvalidMacException" in bad.stderr
