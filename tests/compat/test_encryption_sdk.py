"""The AWS Encryption SDK for Python 4.x (legacy KMS master-key providers)
encrypts and decrypts messages through kmsgate unchanged. Its own KMS clients
find the gateway through AWS_ENDPOINT_URL_KMS and sign for the ARN's region."""

from __future__ import annotations

import os

import aws_encryption_sdk
import pytest
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError
from cryptography.exceptions import InvalidTag
from aws_encryption_sdk.key_providers.kms import (
    DiscoveryAwsKmsMasterKeyProvider,
    DiscoveryFilter,
    StrictAwsKmsMasterKeyProvider,
)

from conftest import ACCOUNT_ID

pytestmark = pytest.mark.encryption_sdk

CONTEXT = {"purpose": "compat-test", "tenant": "kmsgate"}
PLAINTEXT = os.urandom(3000) + b"kmsgate encryption sdk round trip"


@pytest.fixture(scope="module")
def esdk():
    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )


@pytest.fixture(scope="module")
def second_key_arn(kms) -> str:
    return kms.create_key(Description="kmsgate compat suite, second key")["KeyMetadata"]["Arn"]


@pytest.fixture(scope="module")
def message(esdk, key_arn):
    """A message encrypted under one key with the strict provider."""
    ciphertext, header = esdk.encrypt(
        source=PLAINTEXT,
        key_provider=StrictAwsKmsMasterKeyProvider(key_ids=[key_arn]),
        encryption_context=CONTEXT,
    )
    return ciphertext, header


def assert_context_kept(header):
    for k, v in CONTEXT.items():
        assert header.encryption_context.get(k) == v


def test_strict_provider_encrypts_with_one_data_key_from_the_gateway(message, key_arn):
    ciphertext, header = message
    assert PLAINTEXT not in ciphertext
    assert_context_kept(header)
    edks = list(header.encrypted_data_keys)
    assert len(edks) == 1
    assert edks[0].key_provider.provider_id == "aws-kms"
    assert edks[0].key_provider.key_info == key_arn.encode()


def test_strict_provider_decrypts(esdk, message, key_arn):
    ciphertext, _ = message
    plaintext, header = esdk.decrypt(
        source=ciphertext, key_provider=StrictAwsKmsMasterKeyProvider(key_ids=[key_arn])
    )
    assert plaintext == PLAINTEXT
    assert_context_kept(header)


def test_discovery_provider_decrypts(esdk, message):
    ciphertext, _ = message
    plaintext, header = esdk.decrypt(source=ciphertext, key_provider=DiscoveryAwsKmsMasterKeyProvider())
    assert plaintext == PLAINTEXT
    assert_context_kept(header)


def test_discovery_provider_with_a_matching_filter_decrypts(esdk, message):
    ciphertext, _ = message
    provider = DiscoveryAwsKmsMasterKeyProvider(
        discovery_filter=DiscoveryFilter(account_ids=[ACCOUNT_ID], partition="aws")
    )
    plaintext, header = esdk.decrypt(source=ciphertext, key_provider=provider)
    assert plaintext == PLAINTEXT
    assert_context_kept(header)


def test_discovery_provider_with_another_account_refuses(esdk, message):
    ciphertext, _ = message
    provider = DiscoveryAwsKmsMasterKeyProvider(
        discovery_filter=DiscoveryFilter(account_ids=["999999999999"], partition="aws")
    )
    with pytest.raises(AWSEncryptionSDKClientError):
        esdk.decrypt(source=ciphertext, key_provider=provider)


def test_strict_provider_with_two_keys_round_trips_through_either_key(esdk, key_arn, second_key_arn):
    # The first key's data key comes from GenerateDataKey, the second key's
    # copy from Encrypt; each must decrypt on its own.
    ciphertext, header = esdk.encrypt(
        source=PLAINTEXT,
        key_provider=StrictAwsKmsMasterKeyProvider(key_ids=[key_arn, second_key_arn]),
        encryption_context=CONTEXT,
    )
    infos = sorted(edk.key_provider.key_info for edk in header.encrypted_data_keys)
    assert infos == sorted([key_arn.encode(), second_key_arn.encode()])

    for only in (key_arn, second_key_arn):
        plaintext, dheader = esdk.decrypt(
            source=ciphertext, key_provider=StrictAwsKmsMasterKeyProvider(key_ids=[only])
        )
        assert plaintext == PLAINTEXT, only
        assert_context_kept(dheader)


def test_a_tampered_message_does_not_decrypt(esdk, message, key_arn):
    ciphertext, _ = message
    provider = StrictAwsKmsMasterKeyProvider(key_ids=[key_arn])
    # One flipped bit in the message body (the header is a few hundred bytes):
    # the data key still decrypts at the gateway, the frame's tag does not match.
    tampered = bytearray(ciphertext)
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises((AWSEncryptionSDKClientError, InvalidTag)):
        esdk.decrypt(source=bytes(tampered), key_provider=provider)


def test_a_tampered_encrypted_data_key_does_not_decrypt(esdk, message, key_arn):
    ciphertext, header = message
    edk = next(iter(header.encrypted_data_keys)).encrypted_data_key
    at = bytes(ciphertext).index(edk)
    tampered = bytearray(ciphertext)
    tampered[at + len(edk) // 2] ^= 0x01  # inside the gateway's ciphertext blob
    with pytest.raises(AWSEncryptionSDKClientError):
        esdk.decrypt(
            source=bytes(tampered), key_provider=StrictAwsKmsMasterKeyProvider(key_ids=[key_arn])
        )
