"""``autoplay_session``: a per-thread, per-task session scope."""

from __future__ import annotations

import asyncio
import threading

import pytest

from autoplay_base.errors import ConfigError
from llamaindex_autoplay.session import (
    SessionScope,
    autoplay_session,
    current_session,
    resolve_session,
)


def test_scope_is_set_inside_the_block_only() -> None:
    assert current_session() is None
    with autoplay_session("ps_1", product_id="acme") as scope:
        assert scope == SessionScope("ps_1", "acme")
        assert current_session() == scope
    assert current_session() is None


def test_nested_scopes_restore_the_outer_one() -> None:
    with autoplay_session("outer"):
        with autoplay_session("inner", product_id="p"):
            assert current_session() == SessionScope("inner", "p")
        assert current_session() == SessionScope("outer", None)


def test_an_exception_still_restores_the_scope() -> None:
    with pytest.raises(RuntimeError), autoplay_session("ps_1"):
        raise RuntimeError("boom")
    assert current_session() is None


@pytest.mark.parametrize("session_id", ["", None, 42])
def test_bad_session_id_is_a_config_error(session_id: object) -> None:
    with (
        pytest.raises(ConfigError, match="session_id must be a non-empty string"),
        autoplay_session(session_id),  # type: ignore[arg-type]
    ):
        pass


def test_bad_product_id_is_a_config_error() -> None:
    with (
        pytest.raises(ConfigError, match="product_id must be a string"),
        autoplay_session("ps_1", product_id=7),  # type: ignore[arg-type]
    ):
        pass


def test_threads_do_not_see_each_others_scope() -> None:
    inside = threading.Event()
    release = threading.Event()
    seen: list[SessionScope | None] = []

    def worker() -> None:
        with autoplay_session("ps_worker"):
            inside.set()
            release.wait(10)
            seen.append(current_session())

    thread = threading.Thread(target=worker)
    with autoplay_session("ps_main"):
        thread.start()
        assert inside.wait(10)
        assert current_session() == SessionScope("ps_main")
        release.set()
        thread.join(10)
    assert seen == [SessionScope("ps_worker")]


async def test_tasks_see_their_own_scope() -> None:
    both_in = asyncio.Event()
    entered = 0

    async def task(session_id: str) -> SessionScope | None:
        nonlocal entered
        with autoplay_session(session_id):
            entered += 1
            if entered == 2:
                both_in.set()
            await asyncio.wait_for(both_in.wait(), 10)
            return current_session()

    results = await asyncio.gather(task("a"), task("b"))
    assert list(results) == [SessionScope("a"), SessionScope("b")]
    assert current_session() is None


async def test_tasks_created_inside_a_block_inherit_it() -> None:
    with autoplay_session("ps_1", product_id="acme"):
        inherited = await asyncio.create_task(asyncio.sleep(0, current_session()))
    assert inherited == SessionScope("ps_1", "acme")


class TestResolve:
    def test_first_candidate_with_a_session_wins(self) -> None:
        assert resolve_session((None, "x"), ("b", "pb"), ("c", "pc")) == SessionScope("b", "pb")

    def test_product_travels_with_its_session(self) -> None:
        # The second candidate's product never pairs with the first one's session.
        assert resolve_session(("a", None), ("b", "pb")) == SessionScope("a", None)

    def test_default_product_fills_a_missing_one(self) -> None:
        assert resolve_session(("a", None), default_product_id="d") == SessionScope("a", "d")
        assert resolve_session(("a", "p"), default_product_id="d") == SessionScope("a", "p")

    def test_nothing_names_a_session(self) -> None:
        assert resolve_session((None, None), ("", "p")) is None
        assert resolve_session() is None
