"""The connector emulator, driven with plain httpx / httpx-sse over loopback."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse, connect_sse

from autoplay_base import emulator as emulator_package
from autoplay_base.cli import build_parser
from autoplay_base.emulator import (
    DEFAULT_COMMAND_PORT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HOST,
    DEFAULT_LOAD_RATE,
    DEFAULT_LOAD_SESSIONS,
    DEFAULT_REPEAT,
    DEFAULT_REPLAY_SIZE,
    DEFAULT_SPEED,
    EMULATOR_TOKEN_ENV_VAR,
    EmulatorServer,
    EmulatorStats,
    Faults,
    IngestReceiver,
    bad_frames,
    list_scripts,
    load_script,
    script_path,
    synthetic_payload,
)
from autoplay_base.emulator._serving import LoopbackServer
from autoplay_base.errors import ConfigError, EventDecodeError
from autoplay_base.events import ActionsPayload, SummaryPayload, decode_event
from autoplay_base.recording import iter_recording
from autoplay_base.stream_window import iter_stream_events
from tests._fixtures.emulator import EmulatorFactory
from tests._fixtures.redis import wait_for

RESUME_ALL = {"Last-Event-ID": "0"}
PAYLOAD = {"type": "actions", "product_id": "acme", "session_id": "s1", "forwarded_at": 1.0}


def _read(url: str, count: int, **headers: str) -> list[ServerSentEvent]:
    frames: list[ServerSentEvent] = []
    with httpx.Client(timeout=5) as client, connect_sse(client, "GET", url, headers=headers) as src:
        for sse in src.iter_sse():
            frames.append(sse)
            if len(frames) == count:
                break
    return frames


def test_stream_frames_have_event_id_and_json_data(emulator: EmulatorServer) -> None:
    ids = [emulator.publish("acme", {**PAYLOAD, "n": n}) for n in range(3)]
    assert ids == ["1", "2", "3"]
    frames = _read(emulator.url_for("acme"), 3, **{"Last-Event-ID": "0"})
    assert [(f.event, f.id, json.loads(f.data)["n"]) for f in frames] == [
        ("actions", "1", 0),
        ("actions", "2", 1),
        ("actions", "3", 2),
    ]


def test_without_last_event_id_the_stream_is_live(emulator: EmulatorServer) -> None:
    emulator.publish("acme", {**PAYLOAD, "n": "old"})
    client = httpx.Client(timeout=5)
    with client, connect_sse(client, "GET", emulator.url_for("acme")) as source:
        assert emulator.wait_for(lambda s: s.streams_active == 1)
        emulator.publish("acme", {**PAYLOAD, "n": "new"})
        first = next(source.iter_sse())
    assert json.loads(first.data)["n"] == "new"
    assert first.id == "2"


def test_last_event_id_resumes_right_after_that_id(emulator: EmulatorServer) -> None:
    for n in range(5):
        emulator.publish("acme", {**PAYLOAD, "n": n})
    frames = _read(emulator.url_for("acme"), 2, **{"Last-Event-ID": "3"})
    assert [f.id for f in frames] == ["4", "5"]
    assert emulator.requests[-1].last_event_id == "3"
    assert emulator.stats.replayed == 2


def test_replay_ring_is_bounded_and_gaps_are_counted(emulator_factory: EmulatorFactory) -> None:
    server = emulator_factory(replay_size=3)
    for n in range(6):
        server.publish("acme", {**PAYLOAD, "n": n})
    frames = _read(server.url_for("acme"), 3, **{"Last-Event-ID": "1"})
    assert [f.id for f in frames] == ["4", "5", "6"]
    assert server.stats.replay_gaps == 2


def test_heartbeat_and_retry_fields(emulator_factory: EmulatorFactory) -> None:
    server = emulator_factory(heartbeat_interval=0.05, retry_ms=1500)
    frames = _read(server.url_for("acme"), 2)
    assert frames[0].retry == 1500
    assert frames[1].event == "heartbeat"
    assert server.stats.heartbeats_sent >= 1


def test_token_missing_is_401_wrong_is_403_right_is_200(emulator_factory: EmulatorFactory) -> None:
    server = emulator_factory(token="s3cret")
    url = server.url_for("acme")
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer nope"}).status_code == 403
    with httpx.stream("GET", url, headers={"Authorization": "Bearer s3cret"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
    assert [r.authorization for r in server.requests] == ["none", "invalid", "valid"]
    assert "s3cret" not in repr(list(server.requests))


def test_unknown_product_and_path_are_404(emulator: EmulatorServer) -> None:
    assert httpx.get(emulator.url_for("nope")).status_code == 404
    assert httpx.get(f"{emulator.url}/other").status_code == 404
    assert httpx.get(f"{emulator.url}/healthz").text == "ok"


def test_fail_next_answers_5xx_then_recovers(emulator: EmulatorServer) -> None:
    emulator.fail_next(2, status=502)
    url = emulator.url_for("acme")
    assert [httpx.get(url).status_code for _ in range(2)] == [502, 502]
    with httpx.stream("GET", url) as response:
        assert response.status_code == 200
    assert emulator.stats.fault_statuses == 2


def test_fail_for_answers_5xx_for_a_while(emulator: EmulatorServer) -> None:
    emulator.fail_for(60, status=500)
    assert httpx.get(emulator.url_for("acme")).status_code == 500
    emulator.faults.fail_until = 0
    with httpx.stream("GET", emulator.url_for("acme")) as response:
        assert response.status_code == 200


def test_close_every_ends_the_stream_cleanly(emulator: EmulatorServer) -> None:
    emulator.faults.close_every = 2
    for n in range(3):
        emulator.publish("acme", {**PAYLOAD, "n": n})
    client = httpx.Client(timeout=5)
    with client, client.stream("GET", emulator.url_for("acme"), headers=RESUME_ALL) as r:
        ids = [sse.id for sse in EventSource(r).iter_sse()]  # ends: terminating chunk
    assert ids == ["1", "2"]
    assert emulator.stats.fault_closes == 1


def test_close_every_abort_cuts_the_connection(emulator: EmulatorServer) -> None:
    emulator.faults.close_every = 1
    emulator.faults.close_mode = "abort"
    emulator.publish("acme", PAYLOAD)
    client = httpx.Client(timeout=5)
    with (
        client,
        client.stream("GET", emulator.url_for("acme"), headers=RESUME_ALL) as r,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        for _ in EventSource(r).iter_sse():
            pass


def test_drop_connections_cuts_every_open_stream(emulator: EmulatorServer) -> None:
    client = httpx.Client(timeout=5)
    with client, client.stream("GET", emulator.url_for("acme")) as response:
        assert emulator.wait_for(lambda s: s.streams_active == 1)
        emulator.drop_connections()
        with pytest.raises(httpx.RemoteProtocolError):
            for _ in EventSource(response).iter_sse():
                pass


def test_publish_raw_sends_data_verbatim(emulator: EmulatorServer) -> None:
    emulator.publish_raw("acme", "line one\nline two", event="weird")
    (frame,) = _read(emulator.url_for("acme"), 1, **{"Last-Event-ID": "0"})
    assert (frame.event, frame.data) == ("weird", "line one\nline two")


def test_stamped_frames_get_forwarded_at_when_sent(emulator: EmulatorServer) -> None:
    before = time.time()
    emulator.publish("acme", {**PAYLOAD, "forwarded_at": 0.0}, stamp=True)
    (frame,) = _read(emulator.url_for("acme"), 1, **{"Last-Event-ID": "0"})
    assert before <= json.loads(frame.data)["forwarded_at"] <= time.time()


def test_shipped_scripts_are_valid_realistic_recordings() -> None:
    names = list_scripts()
    assert {"invite_team_member", "upgrade_billing_plan", "export_report"} <= set(names)
    for name in names:
        events = list(iter_recording(script_path(name)))
        actions = [e for e in events if isinstance(e, ActionsPayload)]
        summaries = [e for e in events if isinstance(e, SummaryPayload)]
        assert len(actions) >= 10
        assert sum(len(e.actions) for e in actions) >= 15
        assert summaries
        assert len({e.session_id for e in events}) == 1
        for action in (a for e in actions for a in e.actions):
            assert action.title
            assert action.description
            assert action.canonical_url.startswith("https://app.flowdesk.io/")


def test_unknown_script_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="invite_team_member"):
        load_script("no_such_script")


def test_play_script_publishes_every_frame_with_target_product(emulator: EmulatorServer) -> None:
    count = emulator.play("globex", "export_report", speed=0).result(5)
    expected = load_script("export_report")
    assert count == len(expected)
    frames = _read(emulator.url_for("globex"), count, **{"Last-Event-ID": "0"})
    events = [decode_event(f.data, event_id=f.id) for f in frames]
    assert [e.type for e in events] == [f.event for f in expected]
    assert {e.product_id for e in events} == {"globex"}
    assert all(isinstance(e, (ActionsPayload, SummaryPayload)) for e in events)
    assert events[0].session_id == "ps_export_9d05"


def test_play_script_repeat_makes_separate_sessions(emulator: EmulatorServer) -> None:
    count = emulator.play("acme", "invite_team_member", speed=0, repeat=2).result(5)
    frames = _read(emulator.url_for("acme"), count, **{"Last-Event-ID": "0"})
    sessions = {json.loads(f.data)["session_id"] for f in frames}
    assert sessions == {"ps_invite_7f3a-1", "ps_invite_7f3a-2"}


def test_load_mode_round_robins_sessions_and_injects_bad_frames(emulator: EmulatorServer) -> None:
    sent = emulator.load("acme", sessions=3, rate=0, total=9, malformed_every=3).result(5)
    assert sent == 9
    frames = _read(emulator.url_for("acme"), 12, **{"Last-Event-ID": "0"})
    good, bad = [], []
    for frame in frames:
        try:
            good.append(decode_event(frame.data))
        except EventDecodeError as exc:
            bad.append(exc.reason)
    assert [e.session_id for e in good] == [f"load_{i % 3:05d}" for i in range(9)]
    assert bad == ["not_json", "not_object", "invalid"]


def test_load_mode_paces_to_the_rate(emulator: EmulatorServer) -> None:
    started = time.monotonic()
    assert emulator.load("acme", sessions=2, rate=200, total=40).result(5) == 40
    assert time.monotonic() - started >= 0.15  # 40 events at 200/s take ~0.2 s


def test_bad_frames_cycle_covers_every_reason() -> None:
    frames = bad_frames()
    reasons = [next(frames)[0] for _ in range(5)]
    assert reasons == ["not_json", "not_object", "invalid", "oversized", "not_json"]


def test_synthetic_payload_is_a_valid_actions_event() -> None:
    event = decode_event(json.dumps(synthetic_payload("acme", 7, 3)))
    assert isinstance(event, ActionsPayload)
    assert (event.product_id, event.session_id, event.count) == ("acme", "load_00007", 1)


async def test_in_loop_emulator_serves_async_clients(aemulator: EmulatorServer) -> None:
    aemulator.publish("acme", PAYLOAD)
    async with (
        httpx.AsyncClient(timeout=5) as client,
        aconnect_sse(
            client, "GET", aemulator.url_for("acme"), headers={"Last-Event-ID": "0"}
        ) as source,
    ):
        async for sse in source.aiter_sse():
            assert sse.id == "1"
            break
    assert await aemulator.await_for(lambda s: s.streams_opened == 1, timeout=1)


def test_cli_emulator_serves_a_script_over_http() -> None:
    command = [sys.executable, "-m", "autoplay_base.cli", "emulator", "--port", "0"]
    command += ["--product", "acme", "--script", "upgrade_billing_plan", "--speed", "0"]
    command += ["--token", "cli-token"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        _check_cli_emulator(process)


def _check_cli_emulator(process: subprocess.Popen[str]) -> None:
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        assert first.startswith("emulator: serving http://127.0.0.1:")
        url = first.rsplit(" ", 1)[1]
        assert url.endswith("/stream/acme")
        assert process.stdout.readline().strip() == "emulator: published 13 events"
        assert httpx.get(url).status_code == 401
        frames = _read(url, 13, **{"Last-Event-ID": "0", "Authorization": "Bearer cli-token"})
        assert [f.id for f in frames] == [str(n) for n in range(1, 14)]
        assert json.loads(frames[-1].data)["session_id"] == "ps_billing_2c91"
    finally:
        process.terminate()
        process.wait(5)


def test_replay_from_start_serves_the_backlog_to_new_streams(
    emulator_factory: EmulatorFactory,
) -> None:
    server = emulator_factory(replay_from_start=True)
    for n in range(3):
        server.publish("acme", {**PAYLOAD, "n": n})
    assert [f.id for f in _read(server.url_for("acme"), 3)] == ["1", "2", "3"]


def _emulator_imports() -> dict[str, set[str]]:
    """Each emulator module and the emulator modules it imports (``TYPE_CHECKING`` too)."""
    package = Path(emulator_package.__file__).parent
    prefix = "autoplay_base.emulator."
    graph: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        if path.stem == "__init__":
            continue
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix):
                imported.add(str(node.module)[len(prefix) :])
        graph[path.stem] = imported
    return graph


def test_emulator_modules_import_one_way() -> None:
    graph = _emulator_imports()
    assert graph["generators"] == {"_types"}  # never the server that schedules it
    assert graph["server"] == {"_channels", "_serving", "_types", "generators", "push"}
    assert graph["push"] == {"_channels"}  # deliveries read the rings, never the server
    assert graph["receiver"] == {"_serving", "_types"}
    assert graph["_serving"] == set()  # the lifecycle both servers share
    assert graph["_channels"] == graph["_types"] == set()


def test_emulator_stats_are_counters_in_their_documented_order() -> None:
    stats = EmulatorStats()
    stats.frames_sent += 3
    assert stats.as_dict() == {
        "streams_opened": 0,
        "streams_active": 0,
        "frames_sent": 3,
        "heartbeats_sent": 0,
        "replayed": 0,
        "replay_gaps": 0,
        "fault_closes": 0,
        "fault_statuses": 0,
    }
    assert list(stats.as_dict()) == list(EmulatorStats.__slots__)


def test_cli_defaults_are_the_emulators() -> None:
    args = build_parser().parse_args(["emulator"])
    assert (args.host, args.port) == (DEFAULT_HOST, DEFAULT_COMMAND_PORT) == ("127.0.0.1", 8765)
    assert (args.heartbeat, args.replay_size) == (DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_REPLAY_SIZE)
    assert (args.heartbeat, args.replay_size) == (15.0, 10_000)
    assert (args.speed, args.repeat) == (DEFAULT_SPEED, DEFAULT_REPEAT) == (1.0, 1)
    assert (args.sessions, args.rate) == (DEFAULT_LOAD_SESSIONS, DEFAULT_LOAD_RATE) == (10, 100.0)
    assert (args.close_mode, args.fail_first) == (Faults().close_mode, Faults().fail_next)
    assert (args.close_mode, args.fail_first) == ("clean", 0)
    assert args.product is None  # then the server's DEFAULT_PRODUCTS: ("demo",)
    assert EMULATOR_TOKEN_ENV_VAR == "AUTOPLAY_EMULATOR_TOKEN"


def test_cli_emulator_reads_its_token_from_its_own_variable() -> None:
    command = [sys.executable, "-m", "autoplay_base.cli", "emulator", "--port", "0"]
    command += ["--product", "acme", "--script", "upgrade_billing_plan", "--speed", "0"]
    # The client's variable is set too, to another value: the emulator must not read it.
    env = {**os.environ, EMULATOR_TOKEN_ENV_VAR: "cli-token", "AUTOPLAY_APP_UNKEY_TOKEN": "other"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        _check_cli_emulator(process)


def test_cli_emulator_plays_to_a_client_that_connects_late() -> None:
    # The documented command, then a chatbot started after the script has played.
    command = [sys.executable, "-m", "autoplay_base.cli", "emulator", "--port", "0"]
    command += ["--product", "acme", "--script", "invite_team_member", "--speed", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip().rsplit(" ", 1)[1]
            assert process.stdout.readline().strip() == "emulator: published 14 events"
            assert process.stdout.readline().strip() == (
                "emulator: clients that connect later get the scripted events from the start"
            )
            # No Last-Event-ID: a plain client, connecting after everything was published.
            events = list(iter_stream_events(url, max_events=14, timeout=10))
            assert [e.event_id for e in events] == [str(n) for n in range(1, 15)]
            assert {e.session_id for e in events} == {"ps_invite_7f3a"}
        finally:
            process.terminate()
            process.wait(5)


def test_cli_emulator_without_scripts_stays_live() -> None:
    args = build_parser().parse_args(["emulator"])
    assert args.replay_from_start is None  # decided by whether scripts are played
    args = build_parser().parse_args(["emulator", "--script", "all", "--no-replay-from-start"])
    assert args.replay_from_start is False


def test_close_with_open_streams_is_prompt_and_cuts_them(
    emulator_factory: EmulatorFactory,
) -> None:
    server = emulator_factory(heartbeat_interval=None)
    server.publish("acme", PAYLOAD)
    client = httpx.Client(timeout=5)
    with client, contextlib.ExitStack() as streams:
        responses = [
            streams.enter_context(client.stream("GET", server.url_for("acme"), headers=RESUME_ALL))
            for _ in range(3)
        ]
        sources = [EventSource(r).iter_sse() for r in responses]
        assert [next(source).id for source in sources] == ["1", "1", "1"]
        assert server.wait_for(lambda s: s.streams_active == 3)
        started = time.monotonic()
        server.close()
        took = time.monotonic() - started
        for source in sources:
            with pytest.raises(httpx.RemoteProtocolError):  # cut, not a clean end
                next(source)
    assert took < 1.0, took
    assert server.stats.streams_active == 0


def test_a_backlog_goes_out_in_few_large_chunks(emulator: EmulatorServer) -> None:
    for n in range(1000):
        emulator.publish("acme", {**PAYLOAD, "n": n})
    request = b"GET /stream/acme HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as sock:
        sock.sendall(request)
        reader = sock.makefile("rb")
        while reader.readline() not in (b"\r\n", b""):
            pass  # the response head
        per_chunk: list[int] = []
        while sum(per_chunk) < 1000:
            size = int(reader.readline().strip(), 16)
            per_chunk.append(reader.read(size).count(b"\nid: "))
            reader.readline()
    assert per_chunk == [512, 488]  # one ASGI message per batch of frames


def test_without_starlette_the_emulator_names_its_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['starlette'] = None\n"
        "import autoplay_base.emulator as emulator\n"  # the scripts, faults and defaults
        "print(emulator.list_scripts(), emulator.Faults().close_every)\n"
        "for name in ('EmulatorServer', 'IngestReceiver'):\n"
        "    try:\n"
        "        getattr(emulator, name)\n"
        "    except ImportError as exc:\n"
        "        print(name, type(exc).__name__, exc)\n"
        "from autoplay_base.cli import main\n"
        "print('cli imports')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    install = "starlette is required for this feature; install it with "
    install += "pip install 'autoplay-live-context[emulator]'"
    assert done.stdout.splitlines() == [
        "['export_report', 'invite_team_member', 'upgrade_billing_plan'] None",
        f"EmulatorServer MissingDependencyError {install}",
        f"IngestReceiver MissingDependencyError {install}",
        "cli imports",
    ]


def test_a_port_in_use_is_an_os_error_for_the_caller(emulator: EmulatorServer) -> None:
    # Bound by the server itself: uvicorn would log the error and sys.exit() in its loop.
    with pytest.raises(OSError):
        EmulatorServer(port=emulator.port).start()
    assert httpx.get(f"{emulator.url}/healthz").text == "ok"


@pytest.mark.parametrize("server_class", [EmulatorServer, IngestReceiver])
def test_accepted_connections_send_without_nagle(server_class: type[LoopbackServer]) -> None:
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and a
    # socket.create_server listener's is 0: the server's small paced writes then
    # waited for the client's delayed ACK, a ~40 ms stall a few times a second.
    server = server_class().start()
    try:
        with socket.create_connection((server.host, server.port)) as client:
            client.sendall(b"GET / HTTP/1.1\r\n")  # a request head not finished: it stays open
            uvicorn_server = server._uvicorn
            assert uvicorn_server is not None
            connections = uvicorn_server.server_state.connections
            wait_for(lambda: len(connections) == 1, "the server to accept the connection")
            (connection,) = list(connections)
            accepted = connection.transport.get_extra_info("socket")
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        server.close()
