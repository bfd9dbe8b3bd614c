"""Fixtures for the compatibility suite: real AWS clients against a real gateway.

One gateway process per test session: scripts/setup-token makes a fresh
SoftHSM2 token, config and dev credential in a temp dir, then
``$KMSGATE_BIN serve --listen 127.0.0.1:0`` is started on it and the port it
prints is written into the AWS config file. Clients see only that set-up:
every AWS_* variable of the machine is removed from the environment.
"""

from __future__ import annotations

import configparser
import os
import queue
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT_ID = "111122223333"
KEY_ARN_PREFIX = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/"
STARTUP_TIMEOUT_S = 30
LISTENING = re.compile(r"^kmsgate listening on (https?://127\.0\.0\.1:(\d+))\s*$")


def pytest_configure(config):
    for name, text in [
        ("boto3", "driven with boto3 (the AWS SDK for Python)"),
        ("cli", "driven with the AWS CLI v1 from the venv"),
        ("encryption_sdk", "driven with the AWS Encryption SDK for Python 4.x"),
        ("js_sdk", "driven with the AWS SDKs for JavaScript v3 and v2 (node, tests/compat/js)"),
    ]:
        config.addinivalue_line("markers", f"{name}: {text}")


def clean_environ() -> dict[str, str]:
    """The machine's environment without anything that could point an AWS
    client elsewhere (AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "BOTO_")) and k != "SOFTHSM2_CONF"
    }


@dataclass(frozen=True)
class Gateway:
    dir: Path
    endpoint: str
    port: int
    access_key_id: str
    secret_access_key: str
    process: subprocess.Popen
    stderr_path: Path

    @property
    def config_file(self) -> Path:
        return self.dir / "config"

    @property
    def credentials_file(self) -> Path:
        return self.dir / "credentials"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def cli_env(self) -> dict[str, str]:
        """What a user has after the two `export` lines of scripts/run: the
        endpoint and region come from the AWS config file only."""
        env = clean_environ()
        env["AWS_CONFIG_FILE"] = str(self.config_file)
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(self.credentials_file)
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        return env

    def sdk_env(self) -> dict[str, str]:
        """cli_env plus AWS_ENDPOINT_URL_KMS and AWS_DEFAULT_REGION, as an
        application (or the Encryption SDK's own clients) would be set up."""
        env = self.cli_env()
        env["AWS_ENDPOINT_URL_KMS"] = self.endpoint
        env["AWS_DEFAULT_REGION"] = REGION
        return env


def _binary() -> Path:
    path = Path(os.environ.get("KMSGATE_BIN", REPO / "target" / "debug" / "kmsgate"))
    if not path.is_absolute():
        path = REPO / path
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"gateway binary {path} not found or not executable: run `cargo build` "
            "or set KMSGATE_BIN",
            pytrace=False,
        )
    return path


def _wait_for_listening(proc: subprocess.Popen, stderr_path: Path) -> tuple[str, int]:
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            reason = f"did not print 'kmsgate listening on ...' within {STARTUP_TIMEOUT_S} s"
            break
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            proc.wait(timeout=5)
            reason = f"exited with status {proc.returncode} before listening"
            break
        seen.append(line)
        m = LISTENING.match(line)
        if m:
            return m.group(1), int(m.group(2))
    proc.kill()
    proc.wait()
    stdout = "".join(seen)
    pytest.fail(
        f"kmsgate {reason}\n--- stdout ---\n{stdout}\n--- stderr ---\n"
        f"{stderr_path.read_text(errors='replace')}",
        pytrace=False,
    )


def launch_gateway(
    base: Path, extra_env: dict[str, str] | None = None, extra_config: str = ""
) -> Gateway:
    """A fresh token in base/softhsm and a gateway serving it on a free
    port; ``extra_config`` is appended to its kmsgate.toml and
    ``extra_env`` added to its environment. Stop it with stop_gateway."""
    binary = _binary()
    d = base / "softhsm"
    setup = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup-token"), str(d)],
        env=clean_environ(),
        capture_output=True,
        text=True,
    )
    assert setup.returncode == 0, f"scripts/setup-token failed:\n{setup.stdout}\n{setup.stderr}"

    if extra_config:
        with open(d / "kmsgate.toml", "a") as f:
            f.write("\n" + extra_config + "\n")

    stderr_path = base / "kmsgate.stderr.log"
    env = clean_environ()
    env["SOFTHSM2_CONF"] = str(d / "softhsm2.conf")
    env.setdefault("KMSGATE_LOG", "info")
    env.update(extra_env or {})
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [str(binary), "serve", "--config", str(d / "kmsgate.toml"), "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            text=True,
        )
    endpoint, port = _wait_for_listening(proc, stderr_path)

    # The AWS config file names the port the gateway actually got.
    config = d / "config"
    text = config.read_text()
    text, n = re.subn(r"(?m)^endpoint_url *=.*$", f"endpoint_url = {endpoint}", text)
    assert n == 1, f"no endpoint_url line in {config}:\n{text}"
    config.write_text(text)

    creds = configparser.ConfigParser()
    creds.read(d / "credentials")
    return Gateway(
        dir=d,
        endpoint=endpoint,
        port=port,
        access_key_id=creds["default"]["aws_access_key_id"],
        secret_access_key=creds["default"]["aws_secret_access_key"],
        process=proc,
        stderr_path=stderr_path,
    )


def stop_gateway(gw: Gateway) -> None:
    gw.process.terminate()
    try:
        gw.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        gw.process.kill()
        gw.process.wait()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory) -> Gateway:
    gw = launch_gateway(tmp_path_factory.mktemp("kmsgate"))
    yield gw
    stop_gateway(gw)


@pytest.fixture(scope="session", autouse=True)
def aws_environment(gateway):
    """The test process's own environment (used by boto3 and by the clients
    the Encryption SDK builds itself) is exactly Gateway.sdk_env()."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(gateway.sdk_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(autouse=True)
def gateway_still_running(gateway):
    yield
    if gateway.process.poll() is not None:
        pytest.fail(
            f"kmsgate exited with status {gateway.process.returncode} during the test\n"
            f"--- stderr ---\n{gateway.stderr()}",
            pytrace=False,
        )


# No retries: a 5xx or a throttled request must show up as a failure here.
NO_RETRIES = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30)


@pytest.fixture(scope="session")
def kms(aws_environment):
    """A boto3 KMS client configured only through the environment and files."""
    return boto3.session.Session().client("kms", config=NO_RETRIES)


@pytest.fixture(scope="session")
def key_arn(kms) -> str:
    """One symmetric key shared by the tests that only need some key."""
    return kms.create_key(Description="kmsgate compat suite")["KeyMetadata"]["Arn"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the shared gateway's warnings and
    errors (the log itself lives in a temp dir that CI does not keep)."""
    outcome = yield
    report = outcome.get_result()
    gateway = item.funcargs.get("gateway") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and isinstance(gateway, Gateway):
        lines = [line for line in gateway.stderr().splitlines() if " WARN " in line or " ERROR " in line]
        report.sections.append(("kmsgate warnings and errors (last 40)", "\n".join(lines[-40:])))
