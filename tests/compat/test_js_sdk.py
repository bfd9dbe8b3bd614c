"""The AWS SDKs for JavaScript against kmsgate: v3 (@aws-sdk/client-kms) and
v2 (aws-sdk 2.x, in maintenance but in very wide use). They sign
differently: v3 signs every header, Content-Type included; v2 never signs
Content-Type, which AWS KMS accepts, and so must kmsgate.

The node scripts and the pinned packages are in tests/compat/js
(scripts/test runs `npm ci` there); each script makes real calls and prints
what it got as one JSON object, checked here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import KEY_ARN_PREFIX, REGION

pytestmark = pytest.mark.js_sdk

JS = Path(__file__).resolve().parent / "js"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def run_node(gateway, script: str, *args: str) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: install nodejs and npm (.ci/run does)", pytrace=False)
    if not (JS / "node_modules").is_dir():
        pytest.fail(
            "tests/compat/js/node_modules is missing: run `npm ci` there (scripts/test does)",
            pytrace=False,
        )
    env = gateway.sdk_env()
    env["KMSGATE_ENDPOINT"] = gateway.endpoint
    env["AWS_REGION"] = REGION
    # How a v2 application reads the shared config and credentials files
    # named in AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE (v3 always
    # does).
    env["AWS_SDK_LOAD_CONFIG"] = "1"
    done = subprocess.run(
        [node, script, *args],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"node {script} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_real_calls_worked(out: dict, description: str) -> None:
    key_id = out["create_key"]["key_id"]
    assert re.fullmatch(UUID, key_id), out
    assert out["create_key"]["arn"] == KEY_ARN_PREFIX + key_id
    assert out["create_key"]["key_state"] == "Enabled"
    assert out["create_key"]["description"] == description
    assert out["alias"]["describes"] == key_id
    # Encrypt names the key by alias; both answer with the key's ARN.
    assert out["encrypt"] == {
        "key_id": KEY_ARN_PREFIX + key_id,
        "round_trip": True,
        "decrypt_key_id": KEY_ARN_PREFIX + key_id,
    }
    assert out["wrong_context"] == "InvalidCiphertextException"
    assert out["data_key"] == {"length": 32, "round_trip": True}
    not_found = out["not_found"]
    assert not_found["error"] == "NotFoundException", not_found
    assert re.fullmatch(
        rf"Key '{re.escape(KEY_ARN_PREFIX)}{UUID}' does not exist", not_found["message"]
    ), not_found
    assert not_found["status"] == 400
    assert re.fullmatch(UUID, not_found["request_id"] or ""), not_found


def signed(headers: str) -> list[str]:
    return headers.split(";")


def test_the_javascript_sdk_v3_works_unchanged(gateway):
    out = run_node(gateway, "v3.mjs")
    assert_real_calls_worked(out, "aws-sdk-js v3")
    # v3 signs every header it sends, Content-Type included.
    assert out["signed_headers"], out
    for headers in out["signed_headers"]:
        assert {"content-type", "host", "x-amz-date", "x-amz-target"} <= set(signed(headers))


def test_the_javascript_sdk_v2_works_unchanged_without_signing_content_type(gateway):
    out = run_node(gateway, "v2.js")
    assert_real_calls_worked(out, "aws-sdk-js v2")
    # What it signs: never Content-Type, always the target.
    assert out["signed_headers"], out
    for headers in out["signed_headers"]:
        names = signed(headers)
        assert "content-type" not in names, headers
        assert {"host", "x-amz-date", "x-amz-target"} <= set(names), headers


def test_the_v2_signer_is_served_and_refused_once_x_amz_target_is_left_unsigned(gateway):
    out = run_node(gateway, "v2.js", "signer")
    as_signed = out["as_signed"]
    assert "content-type" not in signed(as_signed["signed_headers"]), as_signed
    assert "x-amz-target" in signed(as_signed["signed_headers"]), as_signed
    assert as_signed["status"] == 200, as_signed
    assert isinstance(as_signed["body"]["Keys"], list), as_signed

    # The same request with X-Amz-Target added after signing: it could name
    # any operation, so it is refused, and nothing runs.
    unsigned = out["target_unsigned"]
    assert "x-amz-target" not in signed(unsigned["signed_headers"]), unsigned
    assert unsigned["status"] == 400, unsigned
    assert unsigned["body"] == {
        "__type": "InvalidSignatureException",
        "message": "'x-amz-target' must be a 'SignedHeader' in the AWS Authorization.",
    }
