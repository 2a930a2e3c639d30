"""The Lua scripts that make a write or a read one atomic round trip.

Placeholders (``@SESSIONS@``, ``@META@``, ...) are filled from the key layout in
:mod:`._layout` when the module loads, so the layout is written down once.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

from autoplay_base.backends.redis._layout import (
    _ACTIONS,
    _F_LAST,
    _F_SUMMARY,
    _F_SUMMARY_AT,
    _META,
    _PRODUCTS,
    _SEEN,
    _SESSION,
    _SESSIONS,
    _STREAM,
    _USER,
    _USERS,
)

_SWEEP_PER_CALL = 1000  # bounds the time one write script may spend expiring idle sessions

# -- scripts -----------------------------------------------------------------------------
# Every float travels as Python's repr and is stored as received: Lua's tostring would
# round to 14 digits. Comparisons use the same IEEE doubles as the in-memory backend.
_LUA_PRELUDE = """
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local ttl_ms = tonumber(ARGV[3])
local member = ARGV[4]
local now_s = ARGV[5]
local now = tonumber(now_s)
local idx = prefix .. ":@SESSIONS@"
local expired = 0

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
  redis.call("ZADD", idx, now_s, member)
  return true
end
local function refresh()
  if ttl_ms ~= nil then
    redis.call("PEXPIRE", meta, ttl_ms)
    redis.call("PEXPIRE", acts, ttl_ms)
    redis.call("PEXPIRE", stream, ttl_ms)
    redis.call("PEXPIRE", pkey, ttl_ms)
  end
end
"""

# ARGV 6 mode (a|s), 7 has_event, 8 event_id, 9 max_sessions, 10 cap, 11 dedupe_window,
# 12 stream_maxlen, 13 stream data, 14 user (escaped or ""), 15 max per user, 16 max_users,
# then a: 17.. lines | s: 17 replaces, 18 summary.
# Returns 0 for a duplicate, 1 when stored with nothing to count (the common case, one
# integer to parse), else {1, trimmed, expired, evicted}.
_LUA_WRITE = """
if ARGV[7] == "1" then
  local seen = prefix .. ":@E@:" .. p
  if redis.call("ZADD", seen, "NX", now_s, ARGV[8]) == 0 then return 0 end
  local window = tonumber(ARGV[11])
  if redis.call("ZCARD", seen) > window then
    redis.call("ZREMRANGEBYRANK", seen, 0, -(window + 1))
  end
end
sweep()
local evicted = 0
if not live() then
  redis.call("ZADD", idx, now_s, member)
  redis.call("SADD", pkey, p)
  if redis.call("ZCARD", idx) > tonumber(ARGV[9]) then
    drop(redis.call("ZRANGE", idx, 0, 0)[1])
    evicted = 1
  end
end
local trimmed = 0
if ARGV[6] == "a" then
  if #ARGV > 16 then
    local cap = tonumber(ARGV[10])
    local length = 0
    for i = 17, #ARGV, 1000 do
      length = redis.call("RPUSH", acts, unpack(ARGV, i, math.min(i + 999, #ARGV)))
    end
    if length > cap then
      trimmed = length - cap
      redis.call("LTRIM", acts, -cap, -1)
    end
  end
  redis.call("HSET", meta, "@L@", now_s)
  local user = ARGV[14]
  if user ~= "" then
    local users = prefix .. ":@USERS@"
    if redis.call("ZADD", users, now_s, user) == 1
        and redis.call("ZCARD", users) > tonumber(ARGV[16]) then
      local old = redis.call("ZPOPMIN", users)[1]
      redis.call("DEL", prefix .. ":@U@:" .. old)
    end
    local ukey = prefix .. ":@U@:" .. user
    redis.call("ZADD", ukey, now_s, member)
    local extra = redis.call("ZCARD", ukey) - tonumber(ARGV[15])
    if extra > 0 then redis.call("ZREMRANGEBYRANK", ukey, 0, extra - 1) end
  end
else
  local replaces = tonumber(ARGV[17])
  if replaces > 0 then redis.call("LTRIM", acts, replaces, -1) end
  redis.call("HSET", meta, "@SUM@", ARGV[18], "@SUMAT@", now_s, "@L@", now_s)
end
local maxlen = tonumber(ARGV[12])
if maxlen > 0 then
  if ARGV[7] == "1" then
    redis.call("XADD", stream, "MAXLEN", "~", maxlen, "*",
      "k", ARGV[6], "t", now_s, "d", ARGV[13], "e", ARGV[8])
  else
    redis.call("XADD", stream, "MAXLEN", "~", maxlen, "*", "k", ARGV[6], "t", now_s, "d", ARGV[13])
  end
end
refresh()
if trimmed == 0 and expired == 0 and evicted == 0 then return 1 end
return {1, trimmed, expired, evicted}
"""

# ARGV 6 include_actions, 7 cutoff ("" = none), 8 limit ("" = none).
# Returns one JSON array [found, expired, summary, summary_at, last_activity_at, lines...]
# (absent fields are false): one bulk string parses far faster than a long multi-bulk reply.
_LUA_READ = """
if not live() then return cjson.encode({0, expired}) end
refresh()
local m = redis.call("HMGET", meta, "@SUM@", "@SUMAT@", "@L@")
local out = {1, expired, m[1], m[2], m[3]}
if ARGV[6] == "1" then
  local cutoff = tonumber(ARGV[7])
  local limit = tonumber(ARGV[8])
  if cutoff == nil then
    local first = 0
    if limit ~= nil then first = -limit end
    for _, e in ipairs(redis.call("LRANGE", acts, first, -1)) do
      out[#out + 1] = string.sub(e, string.find(e, " ", 1, true) + 1)
    end
  else
    local all = redis.call("LRANGE", acts, 0, -1)
    local picked = {}
    for i = #all, 1, -1 do
      local e = all[i]
      local sp = string.find(e, " ", 1, true)
      if tonumber(string.sub(e, 1, sp - 1)) < cutoff or (limit ~= nil and #picked >= limit) then
        break
      end
      picked[#picked + 1] = string.sub(e, sp + 1)
    end
    for i = #picked, 1, -1 do out[#out + 1] = picked[i] end
  end
end
return cjson.encode(out)
"""

_LUA_SESSIONS = """
sweep()
return {expired, redis.call("ZRANGE", idx, 0, -1)}
"""


def _render(body: str) -> str:
    source = _LUA_PRELUDE + body
    for placeholder, value in (
        ("@SESSIONS@", _SESSIONS),
        ("@S@", _SESSION),
        ("@META@", _META),
        ("@ACTIONS@", _ACTIONS),
        ("@STREAM@", _STREAM),
        ("@P@", _PRODUCTS),
        ("@E@", _SEEN),
        ("@USERS@", _USERS),
        ("@U@", _USER),
        ("@L@", _F_LAST),
        ("@SUMAT@", _F_SUMMARY_AT),
        ("@SUM@", _F_SUMMARY),
        ("@SWEEP@", str(_SWEEP_PER_CALL)),
    ):
        source = source.replace(placeholder, value)
    return source


class _Script(NamedTuple):
    source: str
    sha: str


def _script(body: str) -> _Script:
    source = _render(body)
    return _Script(source, hashlib.sha1(source.encode()).hexdigest())


_WRITE = _script(_LUA_WRITE)
_READ = _script(_LUA_READ)
_SESSIONS_SCRIPT = _script(_LUA_SESSIONS)
_SCRIPTS = (_WRITE, _READ, _SESSIONS_SCRIPT)
_LOAD_SCRIPTS: tuple[tuple[Any, ...], ...] = tuple(("SCRIPT", "LOAD", s.source) for s in _SCRIPTS)
