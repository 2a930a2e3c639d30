"""The shared TLS context: built once per process, never on an event loop's thread."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from autoplay_base import _tls
from autoplay_base._tls import atls_context, atls_context_for, tls_context, tls_context_for
from autoplay_base.emulator import EmulatorServer, IngestReceiver
from autoplay_base.errors import ConnectorUnavailableError
from autoplay_base.stream import AsyncConnectorClient
from autoplay_base.stream_window import aiter_stream_events, iter_stream_events
from autoplay_base.tracking import AsyncTracker, HttpBatchSink
from tests._fixtures.emulator import EmulatorFactory


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[threading.Thread]]:
    """A process with no shared context yet; the thread of every CA bundle load is recorded."""
    monkeypatch.setattr(_tls, "_context", None)
    monkeypatch.setattr(_tls, "_trusts_nothing", None)
    threads: list[threading.Thread] = []
    load = ssl.SSLContext.load_verify_locations

    def recorded(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        threads.append(threading.current_thread())
        load(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", recorded)
    yield threads


def test_one_verifying_context_per_process(loads: list[threading.Thread]) -> None:
    first = tls_context()
    assert tls_context() is first
    assert (first.verify_mode, first.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert loads == [threading.current_thread()]


def test_the_ca_variables_httpx_honours_are_honoured(
    loads: list[threading.Thread], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    with pytest.raises(FileNotFoundError):
        tls_context()
    assert _tls._context is None  # a failed build is not kept: the next call tries again
    # One certificate of certifi's bundle alone: the context holds exactly that one.
    bundle = Path(certifi.where()).read_text()
    end = "-----END CERTIFICATE-----"
    single = tmp_path / "one.pem"
    single.write_text(bundle[bundle.index("-----BEGIN CERTIFICATE-----") : bundle.index(end)] + end)
    monkeypatch.setenv("SSL_CERT_FILE", str(single))
    assert tls_context().cert_store_stats()["x509_ca"] == 1


async def test_the_async_twin_builds_it_off_the_loop_once(loads: list[threading.Thread]) -> None:
    first, second = await atls_context(), await atls_context()
    assert first is second is tls_context()
    assert len(loads) == 1
    assert loads[0] is not threading.current_thread()
    assert loads[0].name == "autoplay-tls"


async def test_a_build_error_reaches_the_awaiting_task(
    loads: list[threading.Thread], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_DIR", "")
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    with pytest.raises(FileNotFoundError):
        await atls_context()


async def test_plain_http_clients_load_no_ca_bundle(
    loads: list[threading.Thread], emulator_factory: EmulatorFactory
) -> None:
    server: EmulatorServer = emulator_factory()
    for _ in range(2):
        client = AsyncConnectorClient(server.url_for("acme"))
        task = client.run_in_background()
        assert await server.await_for(lambda s: s.streams_active == 1, timeout=5)
        client.stop()
        await task
        assert await server.await_for(lambda s: s.streams_active == 0, timeout=5)
    assert [e async for e in aiter_stream_events(server.url_for("acme"), timeout=0.2)] == []
    receiver = IngestReceiver().start()
    try:
        async with AsyncTracker([HttpBatchSink(receiver.url)]) as tracker:
            tracker.session("s1", product_id="acme").track_event("opened")
            assert (await tracker.aflush(timeout=5.0)).delivered == 1
    finally:
        receiver.close()
    assert loads == []


async def test_a_plain_http_client_gets_a_context_that_trusts_nothing(
    loads: list[threading.Thread],
) -> None:
    untrusting = await atls_context_for("HTTP://127.0.0.1:1/stream")
    assert tls_context_for("http://example.com/") is untrusting
    # Should TLS ever start on it, verification fails: no certificate is trusted.
    assert (untrusting.verify_mode, untrusting.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert untrusting.cert_store_stats()["x509_ca"] == 0
    assert loads == []
    assert await atls_context_for("https://example.com/") is tls_context()
    assert len(loads) == 1


async def test_https_clients_share_one_bundle_loaded_off_the_loop(
    loads: list[threading.Thread], emulator_factory: EmulatorFactory
) -> None:
    server: EmulatorServer = emulator_factory()
    https = server.url_for("acme").replace("http://", "https://", 1)  # a plain-HTTP port
    with pytest.raises(ConnectorUnavailableError):
        _ = [e async for e in aiter_stream_events(https, timeout=0.3)]
    assert len(loads) == 1
    assert loads[0].name == "autoplay-tls"
    with pytest.raises(ConnectorUnavailableError):
        list(iter_stream_events(https, timeout=0.3))
    assert len(loads) == 1
