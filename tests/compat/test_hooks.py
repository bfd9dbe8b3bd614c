"""The binary users run has no test hooks.

The black-box tests in tests/*.rs start a gateway built by `cargo test`,
which turns the `test-hooks` cargo feature on (Cargo.toml): there
KMSGATE_TEST_CLOCK_OFFSET_FILE moves the clock and
KMSGATE_TEST_PANIC_OPERATION makes an operation panic. This suite runs the
binary `cargo build` makes (scripts/test builds it without the feature, as
`cargo build --release` and scripts/run do), and shows that the same
variables change nothing there.
"""

from __future__ import annotations

import time

import boto3
import pytest

from conftest import NO_RETRIES, REGION, launch_gateway, stop_gateway

pytestmark = pytest.mark.boto3

# The scheduler looks for due deletions every 100 ms.
SCHEDULER_MS = 100


@pytest.fixture(scope="module")
def hooked_gateway(tmp_path_factory):
    base = tmp_path_factory.mktemp("hooks")
    offset = base / "clock-offset"
    # 30 days ahead: a 7-day deletion would be due at once on a test clock.
    offset.write_text(str(30 * 86_400))
    gw = launch_gateway(
        base,
        extra_env={
            "KMSGATE_TEST_CLOCK_OFFSET_FILE": str(offset),
            "KMSGATE_TEST_PANIC_OPERATION": "GenerateRandom",
        },
        extra_config=f"[keys]\nscheduler_interval_ms = {SCHEDULER_MS}\n",
    )
    yield gw
    stop_gateway(gw)


def client_of(gw):
    return boto3.session.Session(
        aws_access_key_id=gw.access_key_id,
        aws_secret_access_key=gw.secret_access_key,
        region_name=REGION,
    ).client("kms", endpoint_url=gw.endpoint, config=NO_RETRIES)


def test_a_build_without_test_hooks_ignores_the_test_clock(hooked_gateway):
    kms = client_of(hooked_gateway)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    scheduled = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    # Dated by the system clock, not 30 days ahead.
    assert scheduled["DeletionDate"].timestamp() < time.time() + 8 * 86_400
    time.sleep(20 * SCHEDULER_MS / 1000)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion", "the deletion ran early: the test clock is live"
    assert "KMSGATE_TEST_CLOCK_OFFSET_FILE" not in hooked_gateway.stderr()


def test_a_build_without_test_hooks_ignores_the_panic_hook(hooked_gateway):
    kms = client_of(hooked_gateway)
    assert len(kms.generate_random(NumberOfBytes=16)["Plaintext"]) == 16
    assert "KMSGATE_TEST_PANIC_OPERATION" not in hooked_gateway.stderr()
