"""Recordings: the JSONL format, RecordingWriter, iter_recording, record_stream."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from autoplay_base.emulator import EmulatorServer
from autoplay_base.errors import EventDecodeError
from autoplay_base.events import ActionsPayload, Event, SummaryPayload, UnknownEvent
from autoplay_base.recording import (
    RecordingWriter,
    arecord_stream,
    event_to_record,
    iter_frames,
    iter_recording,
    record_stream,
)
from autoplay_base.stream import ConnectorClient
from tests._fixtures.emulator import Collector

ACTIONS: dict[str, Any] = {
    "type": "actions",
    "product_id": "acme",
    "session_id": "s1",
    "user_id": "u1",
    "actions": [{"title": "Billing", "description": "Opened billing", "canonical_url": "/b"}],
    "forwarded_at": 10.5,
}
SUMMARY: dict[str, Any] = {
    "type": "summary",
    "product_id": "acme",
    "session_id": "s1",
    "summary": "Looked at billing.",
    "replaces": 1,
    "forwarded_at": 11.0,
}
TOUR: dict[str, Any] = {"type": "usertour_trigger", "product_id": "acme", "tour_id": "t9"}


def publish_all(server: EmulatorServer) -> None:
    for payload in (ACTIONS, SUMMARY, TOUR):
        server.publish("acme", payload)


def test_writer_lines_follow_the_format_and_read_back_identically(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    events: list[Event] = [
        ActionsPayload.model_validate({**ACTIONS, "event_id": "1"}),
        SummaryPayload.model_validate({**SUMMARY, "event_id": "2"}),
        UnknownEvent(type="usertour_trigger", data=TOUR, event_id=None),
    ]
    with RecordingWriter(path) as writer:
        for event in events:
            writer(event)
        assert writer.count == 3
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["id"], line["event"]) for line in lines] == [
        ("1", "actions"),
        ("2", "summary"),
        (None, "usertour_trigger"),
    ]
    assert lines[1]["data"] == {**SUMMARY}
    assert lines[2]["data"] == TOUR
    assert list(iter_recording(path)) == events


def test_a_lone_surrogate_is_written_as_the_replacement_character(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    odd = {"type": "custom", "note": "a\ud800b", "ok": "é"}
    with RecordingWriter(path) as writer:
        writer.write(UnknownEvent(type="custom", data=odd, event_id="7"))
        writer.write(UnknownEvent(type="custom", data={"type": "custom", "ok": "é"}, event_id="8"))
    assert path.read_bytes().decode("utf-8").splitlines() == [
        '{"id":"7","event":"custom","data":{"type":"custom","note":"a\ufffdb","ok":"é"}}',
        '{"id":"8","event":"custom","data":{"type":"custom","ok":"é"}}',
    ]
    assert [event.data for event in iter_recording(path)] == [
        {"type": "custom", "note": "a\ufffdb", "ok": "é"},
        {"type": "custom", "ok": "é"},
    ]


def test_writer_refuses_writes_after_close(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "r.jsonl")
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(UnknownEvent(type="x", data={"type": "x"}))


def test_iter_recording_skips_heartbeats_and_reports_bad_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"id": "1", "event": "actions", "data": ACTIONS})
        + "\n\n"
        + json.dumps({"id": None, "event": "heartbeat", "data": {}})
        + "\n"
        + json.dumps({"id": "3", "event": "actions", "data": {"type": "actions"}})
        + "\n"
    )
    with pytest.raises(EventDecodeError, match="line 4") as caught:
        list(iter_recording(path))
    assert caught.value.reason == "invalid"
    assert caught.value.event_id == "3"
    caplog.set_level(logging.WARNING)
    events = list(iter_recording(path, skip_invalid=True))
    assert [e.event_id for e in events] == ["1"]
    assert "line 4" in caplog.text


@pytest.mark.parametrize(
    ("line", "reason"), [("{nope", "not_json"), ('{"id": 1, "data": [1]}', "not_object")]
)
def test_iter_frames_rejects_lines_that_are_not_records(
    tmp_path: Path, line: str, reason: str
) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(EventDecodeError, match="line 1") as caught:
        list(iter_frames(path))
    assert caught.value.reason == reason


def test_event_to_record_leaves_out_unset_fields() -> None:
    record = event_to_record(ActionsPayload.model_validate({**ACTIONS, "event_id": "5"}))
    assert record["id"] == "5"
    assert record["data"]["actions"] == ACTIONS["actions"]
    assert "email" not in record["data"]


def test_record_stream_saves_a_live_window(emulator: EmulatorServer, tmp_path: Path) -> None:
    publish_all(emulator)
    path = tmp_path / "live.jsonl"
    written = record_stream(emulator.url_for("acme"), path, max_events=3, last_event_id="0")
    assert written == 3
    events = list(iter_recording(path))
    assert [(e.type, e.event_id) for e in events] == [
        ("actions", "1"),
        ("summary", "2"),
        ("usertour_trigger", "3"),
    ]


async def test_arecord_stream_saves_a_live_window(emulator: EmulatorServer, tmp_path: Path) -> None:
    publish_all(emulator)
    path = tmp_path / "alive.jsonl"
    written = await arecord_stream(emulator.url_for("acme"), path, max_events=2, last_event_id="1")
    assert written == 2
    assert [e.event_id for e in iter_recording(path)] == ["2", "3"]


def test_writer_as_a_client_callback(emulator: EmulatorServer, tmp_path: Path) -> None:
    path = tmp_path / "client.jsonl"
    done = Collector()
    is_up = threading.Event()
    with RecordingWriter(path) as writer:
        client = ConnectorClient(emulator.url_for("acme"))
        client.on_actions(writer).on_summary(writer).on_event(writer)
        client.on_event(done).on_connect(is_up.set)
        client.run_in_background()
        assert is_up.wait(5)
        publish_all(emulator)
        assert done.wait_for(1)
        client.stop()
    assert [e.type for e in iter_recording(path)] == ["actions", "summary", "usertour_trigger"]
