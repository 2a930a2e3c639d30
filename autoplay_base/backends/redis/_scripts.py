"""The Lua scripts that make a write or a read one atomic round trip.

Placeholders (``@SESSIONS@``, ``@META@``, ...) are filled from the key layout in
:mod:`._layout` when the module loads, so the layout is written down once.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, NamedTuple

from autoplay_base.backends.redis._layout import (
    ACTIONS,
    F_LAST,
    F_SUMMARY,
    F_SUMMARY_AT,
    F_TOUCHED,
    F_WINDOW_REFRESHED,
    META,
    PRODUCTS,
    SEEN,
    SEEN_DIGESTS,
    SEEN_STALE,
    SESSION,
    SESSIONS,
    STREAM,
    USER,
    USER_PRODUCTS,
    USERS,
)

_SWEEP_PER_CALL = 1000  # bounds the time one write script may spend expiring idle sessions
# A session's keys are re-expired at most once per grain, min(ttl / 16, 60 s), and kept
# ttl + grain: four PEXPIREs were an eighth of a write script's server time.
_REFRESH_GRAINS = 16
_REFRESH_GRAIN_MAX_S = 60.0

# -- scripts -----------------------------------------------------------------------------
# Every float travels as Python's repr and is stored as received: Lua's tostring would
# round to 14 digits. Comparisons use the same IEEE doubles as the in-memory backend.
# A backend's TTL and bounds (``@C_...@``) are written into its copy of the session scripts
# (:func:`scripts_for`) rather than sent with every call: each argument cost the server
# about as much as a command's parsing, and each ``tonumber`` more (Lua's strtod). The
# prefix still travels (an argument): backends that differ only in their prefix (one per
# tenant) share scripts, and Redis never evicts a loaded script.
# Both preludes: ARGV 1 prefix (a cluster's scripts get their keys in KEYS instead), 2 the
# session "P:S", 3 now; a session's keys get the sliding TTL from ``refresh``.
_LUA_ARGS = """
local ttl = @C_TTL@
local ttl_ms = @C_TTL_MS@
local member = ARGV[2]
local now_s = ARGV[3]
local now = tonumber(now_s)
local expired = 0
-- Key expiry is a backstop: liveness is the touch time. A refresh sets ttl + grain, so
-- the keys of a session touched again within the same grain (the first touch in a grain
-- refreshes) already outlive ttl from now and need no PEXPIRE.
local grain, expiry_ms, fresh = nil, nil, false
local window_kept = true
if ttl ~= nil then
  grain = math.min(ttl / @GRAINS@, @GRAIN_MAX@)
  expiry_ms = ttl_ms + math.floor(grain * 1000)
end
local function same_grain(touched)
  return grain ~= nil and math.floor(touched / grain) == math.floor(now / grain)
end
"""

_LUA_REFRESH = """
local function refresh()
  if expiry_ms ~= nil and not fresh then
    redis.call("PEXPIRE", meta, expiry_ms)
    redis.call("PEXPIRE", acts, expiry_ms)
    redis.call("PEXPIRE", stream, expiry_ms)
    redis.call("PEXPIRE", pkey, expiry_ms)
  end
end
"""

_LUA_PRELUDE = (
    _LUA_ARGS
    + """
local prefix = ARGV[1]
local idx = prefix .. ":@SESSIONS@"

local function base(m) return prefix .. ":@S@:" .. m end
local function split(m)
  local sep = string.find(m, ":", 1, true)
  return string.sub(m, 1, sep - 1), string.sub(m, sep + 1)
end
local function drop(m)
  local b = base(m)
  redis.call("DEL", b .. "@META@", b .. "@ACTIONS@", b .. "@STREAM@")
  redis.call("ZREM", idx, m)
  local p, s = split(m)
  redis.call("SREM", prefix .. ":@P@:" .. s, p)
end
-- The least recently touched sessions are at the head of the index: stop at the first live one.
local function sweep()
  if ttl == nil then return end
  for _ = 1, @SWEEP@ do
    local head = redis.call("ZRANGE", idx, 0, 0, "WITHSCORES")
    if #head == 0 or not (now - tonumber(head[2]) > ttl) then return end
    drop(head[1])
    expired = expired + 1
  end
end
local b = base(member)
local meta = b .. "@META@"
local acts = b .. "@ACTIONS@"
local stream = b .. "@STREAM@"
local p, s = "", ""
if member ~= "" then p, s = split(member) end
local pkey = prefix .. ":@P@:" .. s
-- Touch the session if it is live (its index score is when it was last touched).
local function live()
  local touched = tonumber(redis.call("ZSCORE", idx, member))
  if touched == nil then return false end
  if ttl ~= nil and now - touched > ttl then
    drop(member)
    expired = expired + 1
    return false
  end
  fresh = same_grain(touched)
  redis.call("ZADD", idx, now_s, member)
  return true
end
"""
    + _LUA_REFRESH
)

# ARGV 4 mode (a|s), 5 has_event, 6 event_id, 7 stream data, 8 user (escaped or ""),
# 9 content digest, 10 dedupe order (sent_at, else at),
# then a: 11.. lines | s: 11 replaces (already clamped to [0, cap] in Python), 12 summary.
# Returns 0 for a duplicate, 1 when stored with nothing to count (the common case, one
# integer to parse), else {1, trimmed, expired, evicted, reused, resets}.
#
# Scripts are not rolled back when a command fails, so the order matters: the dedupe check
# only reads, everything that can fail (a foreign key of the wrong type) runs next, and the
# id is marked seen last, by commands on keys this script alone writes.
# Fragments shared by the standalone and the cluster write scripts (each script's
# prelude defines the key variables they use: meta, acts, stream, seen, digests, stale).
_LUA_DEDUPE_CHECK = """
local has_event = ARGV[5] == "1"
local reused, resets = 0, 0
if has_event then
  local known = redis.call("HGET", digests, ARGV[6])
  if known == ARGV[9] then return 0 end
  if known then reused = 1 end
end
"""

_LUA_APPEND = """
  if #ARGV > 10 then
    local cap = @C_CAP@
    local length = 0
    for i = 11, #ARGV, 1000 do
      local last = math.min(i + 999, #ARGV)
      length = redis.call("RPUSH", acts, unpack(ARGV, i, last))
      -- A list a summary emptied is gone: the one this made has no expiry yet.
      if length == last - i + 1 then fresh = false end
    end
    if length > cap then
      trimmed = length - cap
      redis.call("LTRIM", acts, -cap, -1)
    end
  end
  redis.call("HSET", meta, "@L@", now_s)
"""

_LUA_SUMMARY = """
  local replaces = tonumber(ARGV[11])
  if replaces > 0 then redis.call("LTRIM", acts, replaces, -1) end
  redis.call("HSET", meta, "@SUM@", ARGV[12], "@SUMAT@", now_s, "@L@", now_s)
"""

_LUA_STREAM = """
if @C_MAXLEN@ > 0 then
  if has_event then
    redis.call("XADD", stream, "MAXLEN", "~", @C_MAXLEN@, "*",
      "k", ARGV[4], "t", now_s, "d", ARGV[7], "e", ARGV[6])
  else
    redis.call("XADD", stream, "MAXLEN", "~", @C_MAXLEN@, "*",
      "k", ARGV[4], "t", now_s, "d", ARGV[7])
  end
end
refresh()
"""

_LUA_MARK_SEEN = """
if has_event then
  -- Mark the id seen, last. The window keeps the newest ids by dedupe order: an id older
  -- than all of them is added and trimmed at once (stored, not remembered), so a long
  -- replay never pushes out the ids it repeats next. More than 4 x window such ids in a
  -- row mean the source's clock went back: the window starts over (a new epoch).
  local window = @C_WINDOW@
  redis.call("ZADD", seen, ARGV[10], ARGV[6])
  redis.call("HSET", digests, ARGV[6], ARGV[9])
  local older = false
  local card = redis.call("ZCARD", seen)
  local over = card - window
  if over > 0 then
    -- The ``over`` oldest ids (ties by id, as ZRANGE ranks them), popped in one call.
    local popped = redis.call("ZPOPMIN", seen, over)
    local gone = {}
    for i = 1, #popped, 2 do
      gone[#gone + 1] = popped[i]
      if popped[i] == ARGV[6] then older = true end
    end
    redis.call("HDEL", digests, unpack(gone))
  end
  if older then
    local run = redis.call("INCR", stale)
    if run == 1 then window_kept = false end
    if run > 4 * window then
      redis.call("DEL", seen, digests, stale)
      redis.call("ZADD", seen, ARGV[10], ARGV[6])
      redis.call("HSET", digests, ARGV[6], ARGV[9])
      resets = 1
      window_kept = false
    end
  else
    redis.call("DEL", stale)
  end
  -- Keys this write made have no expiry yet (cluster: see ``window_fresh``).
  if card == 1 then window_kept = false end
end
"""

# ARGV 4 mode (a|s), 5 has_event, 6 event_id, 7 stream data, 8 user (escaped or ""),
# 9 content digest, 10 dedupe order (sent_at, else at),
# then a: 11.. lines | s: 11 replaces (already clamped to [0, cap] in Python), 12 summary.
# Returns 0 for a duplicate, 1 when stored with nothing to count (the common case, one
# integer to parse), else {1, trimmed, expired, evicted, reused, resets}.
#
# Scripts are not rolled back when a command fails, so the order matters: the dedupe check
# only reads, everything that can fail (a foreign key of the wrong type) runs next, and the
# id is marked seen last, by commands on keys this script alone writes.
_LUA_WRITE = (
    """
local seen, digests, stale = nil, nil, nil
if ARGV[5] == "1" then
  seen = prefix .. ":@E@:" .. p
  digests = prefix .. ":@ED@:" .. p
  stale = prefix .. ":@ER@:" .. p
end
"""
    + _LUA_DEDUPE_CHECK
    + """
sweep()
local evicted = 0
if not live() then
  redis.call("ZADD", idx, now_s, member)
  redis.call("SADD", pkey, p)
  if redis.call("ZCARD", idx) > @C_MAX_SESSIONS@ then
    drop(redis.call("ZRANGE", idx, 0, 0)[1])
    evicted = 1
  end
end
local trimmed = 0
if ARGV[4] == "a" then
"""
    + _LUA_APPEND
    + """
  local user = ARGV[8]
  if user ~= "" then
    -- One product's user is "P:U": the index, its bounds and its keys never mix tenants.
    local users = prefix .. ":@USERS@"
    local pu = p .. ":" .. user
    -- A user already in the index already has its product in ``UP`` (both are written
    -- here and removed together), and a session already in its user's index adds nothing
    -- to count: each check runs only when something was added.
    if redis.call("ZADD", users, now_s, pu) == 1 then
      if redis.call("ZCARD", users) > @C_MAX_USERS@ then
        -- The least recent other user goes (never the one just added, even with an older at).
        local head = redis.call("ZRANGE", users, 0, 1)
        local old = head[1]
        if old == pu then old = head[2] end
        redis.call("ZREM", users, old)
        redis.call("DEL", prefix .. ":@U@:" .. old)
        local op, ou = split(old)
        redis.call("SREM", prefix .. ":@UP@:" .. ou, op)
      end
      redis.call("SADD", prefix .. ":@UP@:" .. user, p)
    end
    local ukey = prefix .. ":@U@:" .. pu
    if redis.call("ZADD", ukey, now_s, s) == 1 then
      local extra = redis.call("ZCARD", ukey) - @C_PER_USER@
      if extra > 0 then redis.call("ZREMRANGEBYRANK", ukey, 0, extra - 1) end
    end
  end
else
"""
    + _LUA_SUMMARY
    + "end\n"
    + _LUA_STREAM
    + _LUA_MARK_SEEN
    + """
if trimmed == 0 and expired == 0 and evicted == 0 and reused == 0 and resets == 0 then
  return 1
end
return {1, trimmed, expired, evicted, reused, resets}
"""
)

# ARGV 4 include_actions, 5 cutoff ("" = none), 6 limit ("" = none).
# Returns {found, expired, summary, summary_at, last_activity_at, lines...} (absent fields
# are false, so nil on the wire). A flat array of bulk strings: hiredis decodes it in C,
# where the JSON string this script used to return cost the client a quarter of its
# instructions per read (``json.loads`` of non-ASCII text).
_LUA_READ = """
if not live() then return {0, expired} end
refresh()
local m = redis.call("HMGET", meta, "@SUM@", "@SUMAT@", "@L@")
local out = {1, expired, m[1], m[2], m[3]}
if ARGV[4] == "1" then
  -- Only the newest ``limit`` entries are fetched, then the lookback walks back from the
  -- newest and stops at the first older one: the cost is what the read returns.
  local cutoff = tonumber(ARGV[5])
  local limit = tonumber(ARGV[6])
  local first = 0
  if limit ~= nil then first = -limit end
  local all = redis.call("LRANGE", acts, first, -1)
  local start = #all + 1
  if cutoff == nil then start = 1 end
  while start > 1 do
    local e = all[start - 1]
    if tonumber(string.sub(e, 1, string.find(e, " ", 1, true) - 1)) < cutoff then break end
    start = start - 1
  end
  local n = 5
  for i = start, #all do
    local e = all[i]
    n = n + 1
    out[n] = string.sub(e, string.find(e, " ", 1, true) + 1)
  end
end
return out
"""

# -- cluster scripts: every key arrives in KEYS and all of them share one slot -------------
# The session's own scripts take the standalone scripts' ARGV (the prefix and the user
# arguments unused) and KEYS 1 meta, 2 actions, 3 stream, 4 product index of the session
# id, then for writes 5 seen ids, 6 digests, 7 stale run (the session's own window).
# Liveness is the session's own ``@T@`` field (when it was last touched, the score the
# sessions index gets in the next step): no other slot is read.
_LUA_CLUSTER_PRELUDE = (
    _LUA_ARGS
    + """
local meta, acts, stream, pkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local seen, digests, stale = KEYS[5], KEYS[6], KEYS[7]
local p = string.sub(member, 1, string.find(member, ":", 1, true) - 1)
-- The dedupe window is refreshed by writes with an event id only, so it keeps its own
-- grain: ``@W@`` is when its expiry was last set.
local window_fresh = false
local function live()
  local m = redis.call("HMGET", meta, "@T@", "@W@")
  local touched = tonumber(m[1])
  if touched == nil then return false end
  if ttl ~= nil and now - touched > ttl then
    redis.call("DEL", meta, acts, stream)
    redis.call("SREM", pkey, p)
    expired = expired + 1
    return false
  end
  fresh = same_grain(touched)
  window_fresh = m[2] and same_grain(tonumber(m[2]))
  redis.call("HSET", meta, "@T@", now_s)
  return true
end
"""
    + _LUA_REFRESH
)

# Returns 0 for a duplicate, else {1, trimmed, expired, created, reused, resets}: the
# caller then touches the sessions index (and the user index) in their own slots.
_LUA_CLUSTER_WRITE = (
    _LUA_DEDUPE_CHECK
    + """
local created = 0
if not live() then
  redis.call("HSET", meta, "@T@", now_s)
  redis.call("SADD", pkey, p)
  created = 1
end
local trimmed = 0
if ARGV[4] == "a" then
"""
    + _LUA_APPEND
    + "else\n"
    + _LUA_SUMMARY
    + "end\n"
    + _LUA_STREAM
    + _LUA_MARK_SEEN
    + """
if has_event and expiry_ms ~= nil and not (window_fresh and window_kept) then
  -- The window is the session's: it expires with it (a reset keeps it).
  redis.call("PEXPIRE", seen, expiry_ms)
  redis.call("PEXPIRE", digests, expiry_ms)
  redis.call("PEXPIRE", stale, expiry_ms)
  redis.call("HSET", meta, "@W@", now_s)
end
return {1, trimmed, expired, created, reused, resets}
"""
)

# The sessions index, alone in its slot. KEYS 1 the index; ARGV 1 ttl, 2 member, 3 now,
# 4 max_sessions, 5 mode: "w" a stored write (touch, sweep, evict past max_sessions),
# "r" a read (touch a live member, forget an expired one: its session script dropped it
# and counted it), "s" sessions() (sweep, then every member). Returns the victims as a
# flat list {member, score, "x" expired | "v" evicted, ...} (and "s" the members too):
# the caller drops each victim's keys in its own slot, unless it was touched since.
_LUA_INDEX = """
local idx = KEYS[1]
local ttl = tonumber(ARGV[1])
local member = ARGV[2]
local now_s = ARGV[3]
local now = tonumber(now_s)
local out = {}
local function sweep()
  if ttl == nil then return end
  for _ = 1, @SWEEP@ do
    local head = redis.call("ZRANGE", idx, 0, 0, "WITHSCORES")
    if #head == 0 or not (now - tonumber(head[2]) > ttl) then return end
    redis.call("ZREM", idx, head[1])
    out[#out + 1] = head[1]
    out[#out + 1] = head[2]
    out[#out + 1] = "x"
  end
end
local mode = ARGV[5]
if mode == "w" then
  local added = redis.call("ZADD", idx, now_s, member)
  sweep()
  if added == 1 and redis.call("ZCARD", idx) > tonumber(ARGV[4]) then
    local head = redis.call("ZRANGE", idx, 0, 0, "WITHSCORES")
    redis.call("ZREM", idx, head[1])
    out[#out + 1] = head[1]
    out[#out + 1] = head[2]
    out[#out + 1] = "v"
  end
elseif mode == "r" then
  local touched = tonumber(redis.call("ZSCORE", idx, member))
  if touched ~= nil then
    if ttl ~= nil and now - touched > ttl then
      redis.call("ZREM", idx, member)
    else
      redis.call("ZADD", idx, now_s, member)
    end
  end
else
  sweep()
  return {out, redis.call("ZRANGE", idx, 0, -1)}
end
return out
"""

# A victim of the sessions index, in its own slot. KEYS 1 meta, 2 actions, 3 stream,
# 4 product index; ARGV 1 the escaped product, 2 its index score when it was chosen.
# A session touched since (a write raced the eviction) is live again: it stays.
_LUA_DROP = """
local touched = tonumber(redis.call("HGET", KEYS[1], "@T@"))
if touched ~= nil and touched > tonumber(ARGV[2]) then return 0 end
redis.call("DEL", KEYS[1], KEYS[2], KEYS[3])
redis.call("SREM", KEYS[4], ARGV[1])
return 1
"""

# The users index, alone in its slot. KEYS 1 the index; ARGV 1 "P:U", 2 now,
# 3 max_users. Returns the user pushed out ("P:U", never the one just added) or false.
_LUA_USERS = """
if redis.call("ZADD", KEYS[1], ARGV[2], ARGV[1]) == 1
    and redis.call("ZCARD", KEYS[1]) > tonumber(ARGV[3]) then
  local head = redis.call("ZRANGE", KEYS[1], 0, 1)
  local old = head[1]
  if old == ARGV[1] then old = head[2] end
  redis.call("ZREM", KEYS[1], old)
  return old
end
return false
"""

# ARGV 1 prefix, 2 user (escaped), 3 every product ("1") or one ("0"), 4 product (escaped).
# Returns how many product users were forgotten.
_LUA_FORGET_USER = """
local prefix, user = ARGV[1], ARGV[2]
local up = prefix .. ":@UP@:" .. user
local products = {ARGV[4]}
if ARGV[3] == "1" then products = redis.call("SMEMBERS", up) end
for _, p in ipairs(products) do
  redis.call("DEL", prefix .. ":@U@:" .. p .. ":" .. user)
  redis.call("ZREM", prefix .. ":@USERS@", p .. ":" .. user)
  redis.call("SREM", up, p)
end
return #products
"""

_LUA_SESSIONS = """
sweep()
return {expired, redis.call("ZRANGE", idx, 0, -1)}
"""


def _render(body: str, *, prelude: str = "", constants: dict[str, str] | None = None) -> str:
    source = prelude + body
    for placeholder, value in (constants or {}).items():
        source = source.replace(placeholder, value)
    for placeholder, value in (
        ("@SESSIONS@", SESSIONS),
        ("@S@", SESSION),
        ("@META@", META),
        ("@ACTIONS@", ACTIONS),
        ("@STREAM@", STREAM),
        ("@P@", PRODUCTS),
        ("@ED@", SEEN_DIGESTS),
        ("@ER@", SEEN_STALE),
        ("@E@", SEEN),
        ("@USERS@", USERS),
        ("@UP@", USER_PRODUCTS),
        ("@U@", USER),
        ("@L@", F_LAST),
        ("@SUMAT@", F_SUMMARY_AT),
        ("@SUM@", F_SUMMARY),
        ("@T@", F_TOUCHED),
        ("@W@", F_WINDOW_REFRESHED),
        ("@SWEEP@", str(_SWEEP_PER_CALL)),
        ("@GRAINS@", str(_REFRESH_GRAINS)),
        ("@GRAIN_MAX@", repr(_REFRESH_GRAIN_MAX_S)),
    ):
        source = source.replace(placeholder, value)
    return source


class _Script(NamedTuple):
    source: str
    sha: str


def _script(body: str, *, prelude: str = "", constants: dict[str, str] | None = None) -> _Script:
    source = _render(body, prelude=prelude, constants=constants)
    return _Script(source, hashlib.sha1(source.encode()).hexdigest())


class Constants(NamedTuple):
    """What a backend writes into its session scripts (fixed for its lifetime)."""

    ttl: str  # idle TTL in seconds (a float's repr), "" for none
    ttl_ms: str
    max_sessions: int
    max_actions_per_session: int
    dedupe_window: int
    stream_maxlen: int
    max_sessions_per_user: int
    max_users: int
    cluster: bool


class ScriptSet(NamedTuple):
    """One backend's scripts: its session scripts and what loads every script it calls."""

    write: _Script
    read: _Script
    sessions: _Script  # standalone only (a cluster sweeps with ``CLUSTER_INDEX``)
    load: tuple[tuple[Any, ...], ...]
    """``SCRIPT LOAD`` of each: sent on ``NOSCRIPT``, and ahead of a pipelined stream."""


# The scripts a backend calls that take everything as arguments: the same for all.
FORGET_USER = _script(_LUA_FORGET_USER)
CLUSTER_INDEX = _script(_LUA_INDEX)
CLUSTER_DROP = _script(_LUA_DROP)
CLUSTER_USERS = _script(_LUA_USERS)


@functools.lru_cache(maxsize=64)
def scripts_for(constants: Constants) -> ScriptSet:
    """The scripts of a backend with ``constants`` (cached: a process has few configurations)."""
    values = {
        "@C_TTL@": constants.ttl or "nil",
        "@C_TTL_MS@": constants.ttl_ms or "nil",
        "@C_MAX_SESSIONS@": str(int(constants.max_sessions)),
        "@C_CAP@": str(int(constants.max_actions_per_session)),
        "@C_WINDOW@": str(int(constants.dedupe_window)),
        "@C_MAXLEN@": str(int(constants.stream_maxlen)),
        "@C_PER_USER@": str(int(constants.max_sessions_per_user)),
        "@C_MAX_USERS@": str(int(constants.max_users)),
    }
    loaded: tuple[_Script, ...]
    if constants.cluster:
        write = _script(_LUA_CLUSTER_WRITE, prelude=_LUA_CLUSTER_PRELUDE, constants=values)
        read = _script(_LUA_READ, prelude=_LUA_CLUSTER_PRELUDE, constants=values)
        sessions = CLUSTER_INDEX
        loaded = (write, read, CLUSTER_INDEX, CLUSTER_DROP, CLUSTER_USERS)
    else:
        write = _script(_LUA_WRITE, prelude=_LUA_PRELUDE, constants=values)
        read = _script(_LUA_READ, prelude=_LUA_PRELUDE, constants=values)
        sessions = _script(_LUA_SESSIONS, prelude=_LUA_PRELUDE, constants=values)
        loaded = (write, read, sessions, FORGET_USER)
    load = tuple(("SCRIPT", "LOAD", script.source) for script in loaded)
    return ScriptSet(write, read, sessions, load)
