"""The custody client's TLS: clients share one verified context per CA setting (the CA bundle is
loaded once per process, not per client), and sharing weakens nothing: a server whose
certificate no trusted CA issued, or issued for another host, is refused; a CA named by
``SSL_CERT_FILE`` is trusted as before."""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from tests.keyfiles import write_self_signed_tls

from weightvault.custody.client import ClientConfig, VaultClient
from weightvault.custody.client._tls import verified_context
from weightvault.errors import InputError


def _certificate(folder: Path, name: str, host: x509.GeneralName) -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (its own CA), and its key."""
    return write_self_signed_tls(folder, name, host)


class _WhoAmI(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"name": "rita"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, *_args: Any) -> None:
        pass  # refused handshakes are what the tests make


@contextmanager
def _https(cert: Path, key: Path) -> Iterator[str]:
    """A loopback HTTPS server presenting ``cert``; its URL."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _QuietServer(("127.0.0.1", 0), _WhoAmI)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


LOOPBACK = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))


@pytest.fixture
def ca_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return monkeypatch


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = _certificate(tmp_path, "service", LOOPBACK)
    with _https(cert, key) as url:
        yield url, cert


def _whoami(url: str) -> dict[str, Any]:
    with VaultClient(ClientConfig(url, "token")) as client:
        return client.whoami()


def test_clients_with_one_ca_setting_load_the_ca_once(
    tmp_path: Path, ca_env: pytest.MonkeyPatch
) -> None:
    cert, _key = _certificate(tmp_path, "ca", LOOPBACK)
    ca_env.setenv("SSL_CERT_FILE", str(cert))
    loads: list[object] = []
    load = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args or kwargs)
        load(self, *args, **kwargs)

    ca_env.setattr(ssl.SSLContext, "load_verify_locations", counted)
    clients = [VaultClient(ClientConfig("https://127.0.0.1:9", "token")) for _ in range(5)]
    for client in clients:
        client.close()
    assert len(loads) == 1
    assert verified_context() is verified_context()


def test_another_ca_file_or_folder_gets_its_own_context(
    tmp_path: Path, ca_env: pytest.MonkeyPatch
) -> None:
    first, _key = _certificate(tmp_path, "first", LOOPBACK)
    second, _key = _certificate(tmp_path, "second", LOOPBACK)
    contexts = []
    for cert in (first, second):
        ca_env.setenv("SSL_CERT_FILE", str(cert))
        contexts.append(verified_context())
    assert contexts[0] is not contexts[1]
    assert verified_context() is contexts[1]
    # The same file with other contents (a rotated CA) is another setting.
    second.write_bytes(first.read_bytes() + b"\n")
    assert verified_context() is not contexts[1]
    ca_env.delenv("SSL_CERT_FILE")
    default = verified_context()  # certifi's bundle
    assert default is verified_context() and default not in contexts
    ca_env.setenv("SSL_CERT_DIR", str(tmp_path))
    assert verified_context() is not default
    for context in (*contexts, default):
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_certificate_no_trusted_ca_issued_is_refused(
    server: tuple[str, Path], tmp_path: Path, ca_env: pytest.MonkeyPatch
) -> None:
    url, cert = server
    with pytest.raises(InputError, match="CERTIFICATE_VERIFY_FAILED"):
        _whoami(url)  # certifi's bundle
    other, _key = _certificate(tmp_path, "other", LOOPBACK)
    ca_env.setenv("SSL_CERT_FILE", str(other))
    for _attempt in range(2):  # the shared context stays as strict after a refusal
        with pytest.raises(InputError, match="CERTIFICATE_VERIFY_FAILED"):
            _whoami(url)
    ca_env.setenv("SSL_CERT_FILE", str(cert))  # the service's own CA: trusted, as before
    assert _whoami(url) == {"name": "rita"}
    assert _whoami(url) == {"name": "rita"}


def test_a_certificate_for_another_host_is_refused(
    tmp_path: Path, ca_env: pytest.MonkeyPatch
) -> None:
    cert, key = _certificate(tmp_path, "elsewhere", x509.DNSName("other.example"))
    ca_env.setenv("SSL_CERT_FILE", str(cert))  # a trusted CA, another host's certificate
    with _https(cert, key) as url, pytest.raises(InputError, match="mismatch"):
        _whoami(url)


def test_bulk_transfers_trust_what_the_api_calls_trust(
    tmp_path: Path, ca_env: pytest.MonkeyPatch
) -> None:
    """A pull's file transfers (the standard library's HTTP client) use the same verified
    context as the API calls: a CA named by SSL_CERT_FILE is trusted by both, and a certificate
    for another host is refused by both."""
    from weightvault.custody.client.errors import TransferError
    from weightvault.custody.client.transfer import download_file

    body = json.dumps({"name": "rita"}).encode()  # what the test server answers to every GET
    cert, key = _certificate(tmp_path, "service", LOOPBACK)
    ca_env.setenv("SSL_CERT_FILE", str(cert))
    contexts: list[ssl.SSLContext] = []
    wrap = ssl.SSLContext.wrap_socket

    def recorded(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("server_side"):
            contexts.append(self)
        return wrap(self, *args, **kwargs)

    ca_env.setattr(ssl.SSLContext, "wrap_socket", recorded)
    with _https(cert, key) as url, VaultClient(ClientConfig(url, "token")) as client:
        target = tmp_path / "file.enc"
        download_file(client, "grant", 0, target, len(body))
        assert target.read_bytes() == body
    assert contexts == [verified_context()]  # the API calls' context, not a default one
    ca_env.setattr(ssl.SSLContext, "wrap_socket", wrap)
    other, other_key = _certificate(tmp_path, "other", x509.DNSName("elsewhere.example"))
    ca_env.setenv("SSL_CERT_FILE", str(other))
    with _https(other, other_key) as url, VaultClient(ClientConfig(url, "token")) as client:
        target = tmp_path / "refused.enc"
        with pytest.raises(TransferError, match=r"CERTIFICATE_VERIFY_FAILED|mismatch"):
            download_file(client, "grant", 0, target, len(body))
        assert not target.exists() or target.stat().st_size == 0
