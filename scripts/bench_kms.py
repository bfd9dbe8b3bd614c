"""Client side of scripts/bench: keys, and SigV4-signed requests for wrk.

Run by scripts/bench with a Python that has boto3 (tests/compat/.venv, or
target/bench-venv). Every request is signed by botocore (boto3's client for
CreateKey and GenerateDataKey, botocore's SigV4Auth for the wrk requests);
nothing here computes a signature by hand.

    bench_kms.py create-key  --dir D --endpoint URL
        prints the new key's KeyId
    bench_kms.py create-keys --dir D --endpoint URL --count N [--workers W] --out FILE
        creates N keys in parallel, writes their ids to FILE (one a line),
        prints `created=N errors=E seconds=S keys_per_sec=R`
    bench_kms.py prepare     --dir D --endpoint URL --key-id K --workload W --lua FILE
        W is GenerateDataKey, Decrypt or Encrypt. Builds that request, signs it
        once, sends it once to check that the gateway answers 200, and writes a
        wrk script that sends exactly these bytes and prints one `BENCH ...`
        line from its done() hook.

D is a directory made by scripts/setup-token (credentials, config).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import configparser
import http.client
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path

import kms_isolate  # noqa: E402,F401  (before boto3: see the module)

import boto3  # noqa: E402
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

CONTEXT = {"purpose": "bench"}
CONTENT_TYPE = "application/x-amz-json-1.1"
ENCRYPT_BYTES = 4096


class Setup:
    """Credential and region of a scripts/setup-token directory."""

    def __init__(self, directory: str, endpoint: str):
        d = Path(directory)
        creds = configparser.ConfigParser()
        creds.read(d / "credentials")
        conf = configparser.ConfigParser()
        conf.read(d / "config")
        self.access_key_id = creds["default"]["aws_access_key_id"]
        self.secret_access_key = creds["default"]["aws_secret_access_key"]
        self.region = conf["default"].get("region", "us-east-1")
        self.endpoint = endpoint.rstrip("/")

    def client(self, max_connections: int = 10):
        return boto3.client(
            "kms",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(
                max_pool_connections=max_connections,
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=10,
                read_timeout=60,
            ),
        )


def cmd_create_key(args) -> int:
    setup = Setup(args.dir, args.endpoint)
    meta = setup.client().create_key(Description="kmsgate bench")["KeyMetadata"]
    print(meta["KeyId"])
    return 0


def cmd_create_keys(args) -> int:
    setup = Setup(args.dir, args.endpoint)
    client = setup.client(max_connections=args.workers)

    def one(n: int) -> str:
        return client.create_key(Description=f"kmsgate bench key {n}")["KeyMetadata"]["KeyId"]

    ids: list[str] = []
    errors: list[str] = []
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as pool:
        for f in concurrent.futures.as_completed([pool.submit(one, n) for n in range(args.count)]):
            try:
                ids.append(f.result())
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(e).__name__}: {e}")
    seconds = time.monotonic() - started
    Path(args.out).write_text("".join(f"{i}\n" for i in ids))
    for e in sorted(set(errors))[:5]:
        print(f"bench_kms: create-keys error: {e}", file=sys.stderr)
    print(
        f"created={len(ids)} errors={len(errors)} seconds={seconds:.2f} "
        f"keys_per_sec={len(ids) / max(seconds, 1e-9):.1f}"
    )
    return 0 if not errors else 1


def signed_request(setup: Setup, operation: str, payload: dict) -> tuple[dict[str, str], bytes]:
    """The headers (Host included) and body of one SigV4-signed request."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    url = setup.endpoint + "/"
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": f"TrentService.{operation}"},
    )
    credentials = Credentials(setup.access_key_id, setup.secret_access_key)
    SigV4Auth(credentials, "kms", setup.region).add_auth(request)
    headers = {"Host": urllib.parse.urlsplit(url).netloc}
    headers.update({k: v for k, v in request.headers.items()})
    return headers, body


def send_once(setup: Setup, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """Sends exactly these bytes, as wrk will."""
    parts = urllib.parse.urlsplit(setup.endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def lua_string(value: str | bytes) -> str:
    """A Lua string literal holding exactly these bytes."""
    data = value.encode() if isinstance(value, str) else value
    out = ['"']
    for b in data:
        if 32 <= b < 127 and b not in (0x22, 0x5C):
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    out.append('"')
    return "".join(out)


DONE_HOOK = """
-- One machine-readable line for scripts/bench. Latencies in microseconds;
-- status_errors counts responses with a status >= 400 (wrk's
-- "Non-2xx or 3xx responses"), the others are socket errors.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%.0f duration_us=%.0f bytes=%.0f status_errors=%.0f connect_errors=%.0f read_errors=%.0f write_errors=%.0f timeout_errors=%.0f p50_us=%.0f p90_us=%.0f p99_us=%.0f p999_us=%.0f max_us=%.0f\\n",
      summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def cmd_prepare(args) -> int:
    setup = Setup(args.dir, args.endpoint)
    workload = args.workload
    expect_plaintext = None
    if workload == "GenerateDataKey":
        payload = {"KeyId": args.key_id, "KeySpec": "AES_256", "EncryptionContext": CONTEXT}
    elif workload == "Decrypt":
        made = setup.client().generate_data_key(
            KeyId=args.key_id, KeySpec="AES_256", EncryptionContext=CONTEXT
        )
        expect_plaintext = made["Plaintext"]
        payload = {
            "CiphertextBlob": base64.b64encode(made["CiphertextBlob"]).decode(),
            "EncryptionContext": CONTEXT,
        }
    elif workload == "Encrypt":
        payload = {
            "KeyId": args.key_id,
            "Plaintext": base64.b64encode(os.urandom(ENCRYPT_BYTES)).decode(),
            "EncryptionContext": CONTEXT,
        }
    else:
        print(f"bench_kms: unknown workload {workload}", file=sys.stderr)
        return 2

    headers, body = signed_request(setup, workload, payload)
    status, answer = send_once(setup, headers, body)
    if status != 200:
        print(
            f"bench_kms: the signed {workload} request got HTTP {status}: {answer[:300]!r}",
            file=sys.stderr,
        )
        return 1
    if expect_plaintext is not None:
        got = base64.b64decode(json.loads(answer)["Plaintext"])
        if got != expect_plaintext:
            print("bench_kms: Decrypt returned another plaintext", file=sys.stderr)
            return 1

    lines = [
        f"-- Written by scripts/bench_kms.py: one SigV4-signed TrentService.{workload}",
        "-- request (signed once by botocore), sent unchanged on every connection.",
        'wrk.method = "POST"',
        'wrk.path = "/"',
        f"wrk.body = {lua_string(body)}",
    ]
    for name, value in headers.items():
        lines.append(f"wrk.headers[{lua_string(name)}] = {lua_string(value)}")
    Path(args.lua).write_text("\n".join(lines) + "\n" + DONE_HOOK)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("create-key", "create-keys", "prepare"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True)
        p.add_argument("--endpoint", required=True)
        if name == "create-keys":
            p.add_argument("--count", type=int, required=True)
            p.add_argument("--workers", type=int, default=16)
            p.add_argument("--out", required=True)
        if name == "prepare":
            p.add_argument("--key-id", required=True)
            p.add_argument("--workload", required=True, choices=["GenerateDataKey", "Decrypt", "Encrypt"])
            p.add_argument("--lua", required=True)
    args = parser.parse_args()
    return {"create-key": cmd_create_key, "create-keys": cmd_create_keys, "prepare": cmd_prepare}[
        args.command
    ](args)


if __name__ == "__main__":
    sys.exit(main())
