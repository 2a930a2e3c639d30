"""The cluster's pure parts (``_cluster.py``): routing keys, slot groups, replies, steps.

No sockets: these are the decisions the cluster runners act on.
"""

from __future__ import annotations

import redis
import redis.exceptions as errors

from autoplay_base.backends.base import SessionKey
from autoplay_base.backends.redis._cluster import (
    ClusterPlan,
    command_key,
    group_replies,
    slot_groups,
    verdict,
)
from autoplay_base.backends.redis._layout import Layout, key_id
from autoplay_base.backends.redis._scripts import CLUSTER_DROP, CLUSTER_INDEX, CLUSTER_USERS

KEYS = Layout("app", cluster=True)
PLAN = ClusterPlan(KEYS, ttl="100.0", max_sessions=4, max_users=2, per_user=3)


def slot(name: str) -> int:
    return int(redis.crc.key_slot(name.encode()))


def test_every_key_of_one_session_shares_one_slot_whatever_its_ids_hold() -> None:
    for key in (SessionKey("p", "s"), SessionKey("}p{", "{s}"), SessionKey("a:b", "%7B}")):
        names = (*KEYS.session_keys(key), *KEYS.window_keys(key), KEYS.history(key))
        assert len({slot(name) for name in names}) == 1
        user = key.session_id  # an id with braces, as a user id
        assert slot(KEYS.user(key.product_id, user)) == slot(KEYS.user_products(user))
    assert KEYS.session(SessionKey("p{", "s}"), ":a") == "app:s:p%7B:{s%7D}:a"
    assert key_id("%7B") == "%257B"  # escaping stays injective
    # Standalone names carry no tags (the documented layout).
    assert Layout("app").session(SessionKey("p", "s"), ":a") == "app:s:p:s:a"


def test_a_command_routes_by_its_first_key() -> None:
    assert command_key(("EVALSHA", "sha", 2, "k1", "k2", "arg")) == "k1"
    assert command_key(("EVALSHA", "sha", 0, "arg")) is None
    assert command_key(("SMEMBERS", "k")) == "k"
    assert command_key(("PING",)) is None


def test_slot_groups_keep_order_inside_a_slot() -> None:
    assert slot_groups([7, 3, 7, 9, 3]) == [(7, [0, 2]), (3, [1, 4]), (9, [3])]


def test_replies_of_one_slot_are_one_per_command() -> None:
    assert group_replies(["x"], 1, asking=False) == (["x"], ["x"])
    assert group_replies(["OK", "x"], 1, asking=True) == (["x"], ["x"])
    seen, results = group_replies(["OK", "QUEUED", "QUEUED", [1, 2]], 2, asking=False)
    assert results == [1, 2]
    assert seen == ["OK", "QUEUED", "QUEUED", [1, 2], 1, 2]
    aborted = errors.ExecAbortError("EXECABORT")
    assert group_replies(["OK", "QUEUED", aborted], 2, asking=False)[1] == [aborted, aborted]


def test_the_verdict_of_a_slot_s_replies() -> None:
    moved = errors.MovedError("12 127.0.0.1:7001")
    ask = errors.AskError("12 127.0.0.1:7002")
    assert verdict([1, moved], errors) == ("moved", moved)
    assert verdict([ask], errors) == ("ask", ask)
    down = errors.ClusterDownError("CLUSTERDOWN the cluster is down")
    assert verdict([down], errors) == ("down", down)
    again = errors.TryAgainError("TRYAGAIN")
    assert verdict([again], errors) == ("down", again)
    relayed = errors.ResponseError("CLUSTERDOWN Hash slot not served")  # from inside a script
    assert verdict([relayed], errors) == ("down", relayed)
    assert verdict([errors.NoScriptError("NOSCRIPT")], errors) == ("noscript", None)
    assert verdict([1, "OK", errors.ResponseError("WRONGTYPE")], errors) == ("ok", None)


def test_a_stored_write_updates_the_indexes_and_drops_its_victims() -> None:
    key = SessionKey("p", "s")
    steps = PLAN.after_write(key, "5.0", "u")
    assert [c[0] if c[0] != "EVALSHA" else c[1] for c in steps] == [
        CLUSTER_INDEX.sha,
        CLUSTER_USERS.sha,
        "SADD",
        "ZADD",
        "ZREMRANGEBYRANK",
    ]
    assert steps[0][3:] == ("app:sessions", "100.0", "p:s", "5.0", 4, "w")
    assert steps[4] == ("ZREMRANGEBYRANK", KEYS.user("p", "u"), 0, -4)
    victims = ["p:old", "1.0", "x", "q:lru", "2.0", "v"]
    outcome = PLAN.outcome(steps, [victims, "p:gone", 1, 1, 0])
    assert (outcome.expired, outcome.evicted) == (1, 1)
    old, lru = SessionKey("p", "old"), SessionKey("q", "lru")
    assert outcome.drops == (
        ("EVALSHA", CLUSTER_DROP.sha, 4, *KEYS.session_keys(old), "p", "1.0"),
        ("EVALSHA", CLUSTER_DROP.sha, 4, *KEYS.session_keys(lru), "q", "2.0"),
        ("DEL", KEYS.user("p", "gone")),
        ("SREM", KEYS.user_products("gone"), "p"),
    )
    # A failed step names no victims.
    assert PLAN.outcome(steps, [errors.ResponseError("WRONGTYPE")] * 5).drops == ()


def test_sessions_sweep_and_forget_user_steps() -> None:
    sweep = PLAN.sweep("9.0")
    outcome = PLAN.outcome((sweep,), [[["p:s", "1.0", "x"], ["q:t"]]])
    assert (outcome.expired, outcome.evicted) == (1, 0)
    assert outcome.drops == (PLAN.drop(SessionKey("p", "s"), "1.0"),)
    assert PLAN.forget_user("u:1", []) == ()
    assert PLAN.forget_user("u:1", ["p", "q"]) == (
        ("DEL", KEYS.user("p", "u:1"), KEYS.user("q", "u:1")),
        ("SREM", KEYS.user_products("u:1"), "p", "q"),
        ("ZREM", KEYS.users(), "p:u%3A1", "q:u%3A1"),
    )
