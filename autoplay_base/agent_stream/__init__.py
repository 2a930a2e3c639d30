"""Agent run streams: the chatbot's own answer, live in the browser, resumable and cancellable.

A producer (the agent, through a LangChain/LlamaIndex driver or by hand) opens a
run and emits structured events; any number of listeners, in this process or
(with a ``RedisBackend``) in any other, read them as they are written, resume
from a cursor, and can cancel the run::

    stream = RunStream()                       # in-process; RunStream(backend) for Redis
    with stream.run(session_id="s1", product_id="p1", user_message="Weather?") as run:
        run.text_delta("It is ")
        run.tool_input_delta("c1", "weather", '{"ci')      # streamed argument text
        run.tool_input_delta("c1", "weather", 'ty": "NYC"}')
        run.tool_input("c1", "weather", {"city": "NYC"})   # the parsed arguments
        run.tool_output("c1", {"temp": 21})
        if run.cancelled:                                  # or run.raise_if_cancelled()
            ...
    for event in stream.listen(run.run_id, session_id="s1", product_id="p1"):
        print(event.seq, event.type, event.data)           # 1 start, ..., finished

The driver API (what a framework adapter calls)
-----------------------------------------------
``with RunStream.run(...) as run`` / ``async with AsyncRunStream.run(...) as run``
(``session_id``, ``product_id`` keyword-only; ``user_id`` feeds
:meth:`~RunStream.live_sessions`; ``if_live="reject"`` raises
:class:`RunLiveError` while another run of the session is live,
``"cancel_previous"`` cancels it; ``user_message`` is appended to the chat
history). ``Run``'s helpers are plain synchronous calls on both twins, O(1), safe
from any thread, returning False when the event was dropped:

==============================================  ====================================
``run.text_delta(text)``                         a piece of the answer
``run.reasoning_delta(text)``                    a piece of the reasoning
``run.tool_input_delta(call_id, name, chunk)``   raw argument text; never parsed
``run.tool_input(call_id, name, input)``         the complete, parsed arguments
``run.tool_started(call_id, name)``              the tool runs
``run.tool_output(call_id, output)``             any value, encoded safely
``run.tool_error(call_id, error)``               a string, or an exception (class name only)
``run.step_started(name=None)``                  a model call / node begins
``run.step_finished(usage=None)``                ... ends (usage: any value)
``run.custom(name, data)``                       an application event (``data-<name>``)
==============================================  ====================================

Cancellation: ``run.cancelled``, ``run.raise_if_cancelled()`` (raises
:class:`RunCancelledError`, which the ``with`` swallows), ``run.wait_cancelled(timeout)``
and ``await run.await_cancelled(timeout)`` (race it against the model's stream to
stop at once). ``run.interrupt()`` marks the run interrupted.

Leaving the block writes exactly one terminal event: ``finished`` with ``status``
``success`` / ``interrupted`` / ``cancelled`` (a cancel request seen, a
``RunCancelledError``, or an ``asyncio.CancelledError``, which still propagates)
or ``error`` with ``code`` (``run_failed``, ``timeout``) and a fixed safe message;
the exception's own text only with ``expose_errors=True``. Then the answer's text
(partial on cancel or error, its status in ``response_metadata["autoplay_run"]``)
goes to the chat history, which :class:`langchain_autoplay.AutoplayChatMessageHistory`
reads back.

Listening
---------
``stream.listen(run_id, *, session_id, product_id, after=None)`` yields
:class:`RunEvent` ``(id, seq, type, ts, data, run_id)``: ``id`` is the opaque
resume cursor (the SSE ``id:``), ``seq`` counts 1..N with no holes. It ends on the
terminal event or with a synthesized event (``id=None``, ``seq=0``):
``producer_lost`` (the producer's lease expired without a terminal event),
``unknown_run`` (no such run in this ``(product_id, session_id)``, or expired); a
``gap`` event (``data["missing"]`` events trimmed) precedes events after a trimmed
stretch. A run id alone opens nothing. ``stream.follow(session_id, *, product_id)``
moves from one run of the session to the next. ``stream.cancel(run_id=None, *,
session_id, product_id)`` works from any process (this process's runs at once;
Redis: the run's writer sees the request within ``heartbeat_seconds``).
:mod:`autoplay_base.agent_stream.sse` encodes events as SSE (native JSON or the
Vercel AI SDK UI message stream), :mod:`autoplay_base.agent_stream.starlette`
serves them.

A listener waits for the write itself (in-process: the run's condition; Redis:
``XREAD BLOCK`` after its cursor; the async listeners of one stream on a standalone
server share one reader's ``XREAD`` over all their cursors, on one connection), so an
event reaches it within a few round trips;
``poll_seconds`` only bounds one wait (then the producer's lease is read again) and
is how often ``follow`` looks for the session's next run.

Bounds (options of both twins, defaults in :mod:`.stream`): ``max_events``
per run (10,000; Redis ``MAXLEN ~``), ``retention_seconds`` (600, sliding while
live), ``lease_seconds`` (5; Redis: renewed every third of it, at least every
heartbeat), ``heartbeat_seconds`` (0.025: an idle run's cancel check), ``poll_seconds``
(0.05; Redis: also at most half the client's ``socket_timeout``),
``max_blocking_listeners`` (64: Redis listeners waiting at once, sync or on a Cluster
each holding a pooled connection in its ``XREAD``; one more sleeps ``poll_seconds``
between reads, counted in ``listener_slots_full``), ``max_buffered_events`` per
run (1,000: then deltas coalesce, else drop; tool and terminal events never),
``max_event_bytes`` (64 KiB: values cut, event ``truncated``), ``max_runs``
(1,000), ``max_text_chars`` (200,000), ``close_timeout`` (2 s). A Redis outage
never fails the agent: writes are retried, what is lost is counted
(``stream.stats``) and handed to ``on_drop``; ``strict=True`` raises
:class:`~autoplay_base.errors.BackendUnavailableError` instead.

Modules: ``_events`` and ``_state`` (pure), ``_history`` (pure), ``_memory`` and
``_redis`` (transports), ``_writer`` (the Redis writer: one thread per transport for
every live run), ``_reader`` (the async listeners' shared ``XREAD``), ``stream`` (the
twins), ``sse``, ``starlette``.
"""

from autoplay_base.agent_stream._errors import RunCancelledError, RunLiveError
from autoplay_base.agent_stream._events import RunEvent
from autoplay_base.agent_stream.stream import (
    AsyncRunStream,
    DroppedEvents,
    IfLive,
    LiveRun,
    Run,
    RunStream,
    RunStreamStats,
)

__all__ = [
    "AsyncRunStream",
    "DroppedEvents",
    "IfLive",
    "LiveRun",
    "Run",
    "RunCancelledError",
    "RunEvent",
    "RunLiveError",
    "RunStream",
    "RunStreamStats",
]
