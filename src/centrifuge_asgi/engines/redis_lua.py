"""Lua scripts of the Redis engine: every multi-key step is one atomic script.

Key and field names follow the Centrifugo data model: the stream meta hash keeps ``e``
(epoch), ``s`` (top offset), ``v``/``ve`` (last version and its epoch); stream entry IDs
are ``<offset>-0`` with a single field ``d``; idempotency results are hashes ``e``/``s``.
TTLs are in milliseconds (PEXPIRE) so sub-second settings work.

The history scripts also take the highest position the calling node has seen for the
channel (its epoch and offset). When the meta still has that epoch but a lower top, the
stream lost its tail after the node saw it (an asynchronous replica was promoted, or an
old snapshot was restored): offsets would be handed out a second time under the same
epoch, and subscribers already past them would skip the new publications as duplicates.
The scripts then start a new epoch, which subscribers cannot mistake for their own.

Lua numbers are doubles, exact only up to 2**53 and printed in exponent form from 1e14 on,
while offsets and versions are uint64. So no client-given number becomes a Lua number:
Python passes the stream ID to read from as text, and versions stay decimal text, compared
by :data:`_NEWER` and stored as given. Offsets made by HINCRBY are formatted with ``%d``.
"""

from __future__ import annotations

__all__ = ["HISTORY", "NEWER", "PRESENCE_ADD", "PRESENCE_GET", "PRESENCE_REMOVE", "PUBLISH"]

NEWER = """
-- newer(a, b): is version a above version b? a is decimal text without leading zeros (as
-- Python writes it); so is b, unless an older release stored it as a Lua number (a double
-- printed as '1.1529215046068e+18'): compared as doubles then, as that release did.
local function newer(a, b)
  if not string.find(b, '^%d+$') then
    return tonumber(a) > tonumber(b)
  end
  if #a ~= #b then
    return #a > #b
  end
  local n = #a
  if n <= 15 then
    return tonumber(a) > tonumber(b)
  end
  -- equal lengths of 16..20 digits: compare in two parts of at most 15 digits (exact)
  local ha, hb = tonumber(string.sub(a, 1, n - 15)), tonumber(string.sub(b, 1, n - 15))
  if ha ~= hb then
    return ha > hb
  end
  return tonumber(string.sub(a, n - 14)) > tonumber(string.sub(b, n - 14))
end
"""
"""Lua: exact comparison of two uint64 versions given as decimal text (used by the map
broker's scripts too)."""

PUBLISH = (
    NEWER
    + """
-- KEYS: stream, meta, result
-- ARGV: pubsub channel, payload, history (0/1), size, ttl ms, meta ttl ms, new epoch,
--       use result (0/1), result ttl ms, version, version epoch, publish command,
--       seen epoch, seen offset (the highest position the node saw; '' and 0 when none),
--       delta (0/1: send the previous stream entry along, the base of a fossil delta)
local stream, meta, result = KEYS[1], KEYS[2], KEYS[3]
local channel, payload = ARGV[1], ARGV[2]
local history = ARGV[3] == '1'
local use_result = ARGV[8] == '1'
if use_result then
  local cached = redis.call('hmget', result, 's', 'e')
  if cached[1] then
    return {tonumber(cached[1]), cached[2] or '', 1, 0}
  end
end
local top, epoch = 0, ''
if history then
  epoch = redis.call('hget', meta, 'e')
  if not epoch or (epoch == ARGV[13]
      and (tonumber(redis.call('hget', meta, 's')) or 0) < tonumber(ARGV[14])) then
    -- no stream yet, or one that lost offsets the node saw: a new epoch
    epoch = ARGV[7]
    redis.call('hset', meta, 'e', epoch)
  end
  local version = ARGV[10]
  if version ~= '0' then
    local stored = redis.call('hmget', meta, 'v', 've')
    local same_epoch = ARGV[11] == '' or ARGV[11] == (stored[2] or '')
    if same_epoch and not newer(version, stored[1] or '0') then
      redis.call('pexpire', meta, ARGV[6])
      return {tonumber(redis.call('hget', meta, 's')) or 0, epoch, 0, 1}
    end
    redis.call('hset', meta, 'v', version, 've', ARGV[11])
  end
  top = redis.call('hincrby', meta, 's', 1)
  redis.call('pexpire', meta, ARGV[6])
  local id = string.format('%d', top)
  local prev = nil
  if top == 1 then
    redis.call('del', stream)
  elseif ARGV[15] == '1' then
    local last = redis.call('xrevrange', stream, '+', '-', 'COUNT', 1)
    if last[1] and last[1][1] == string.format('%d-0', top - 1) then
      prev = last[1][2][2]
    end
  end
  local added = redis.pcall('xadd', stream, 'MAXLEN', ARGV[4], id .. '-0', 'd', payload)
  if type(added) == 'table' and added.err then
    -- entries above the top survived a rollback of the meta: never continue them
    redis.call('del', stream)
    redis.call('xadd', stream, 'MAXLEN', ARGV[4], id .. '-0', 'd', payload)
  end
  redis.call('pexpire', stream, ARGV[5])
  if prev then
    redis.call(ARGV[12], channel,
      '__d1:' .. id .. ':' .. epoch .. ':' .. #prev .. '__' .. prev .. payload)
  else
    redis.call(ARGV[12], channel, '__p1:' .. id .. ':' .. epoch .. '__' .. payload)
  end
else
  redis.call(ARGV[12], channel, payload)
end
if use_result then
  redis.call('hset', result, 's', top, 'e', epoch)
  redis.call('pexpire', result, ARGV[9])
end
return {top, epoch, 0, 0}
"""
)

HISTORY = """
-- KEYS: stream, meta
-- ARGV: new epoch, meta ttl ms, include publications (0/1), reverse (0/1),
--       first stream ID to read ('-'/'+' from the oldest/newest, '' = none left),
--       limit (-1 = all), seen epoch, seen offset
local stream, meta = KEYS[1], KEYS[2]
local stored = redis.call('hmget', meta, 's', 'e')
local top, epoch = tonumber(stored[1]) or 0, stored[2]
if not epoch or (epoch == ARGV[7] and top < tonumber(ARGV[8])) then
  -- no stream yet, or one that lost offsets the node saw: a new epoch
  epoch = ARGV[1]
  redis.call('hset', meta, 'e', epoch)
end
redis.call('pexpire', meta, ARGV[2])
if ARGV[3] ~= '1' then
  return {top, epoch, {}}
end
local start, limit = ARGV[5], tonumber(ARGV[6])
if start == '' then
  return {top, epoch, {}}
end
local entries
if ARGV[4] == '1' then
  if limit > 0 then
    entries = redis.call('xrevrange', stream, start, '-', 'COUNT', limit)
  else
    entries = redis.call('xrevrange', stream, start, '-')
  end
elseif limit > 0 then
  entries = redis.call('xrange', stream, start, '+', 'COUNT', limit)
else
  entries = redis.call('xrange', stream, start, '+')
end
return {top, epoch, entries}
"""

PRESENCE_ADD = """
-- KEYS: data hash, expiry zset; ARGV: ttl ms, expire-at (unix s), client id, info
redis.call('hset', KEYS[1], ARGV[3], ARGV[4])
redis.call('pexpire', KEYS[1], ARGV[1])
redis.call('zadd', KEYS[2], ARGV[2], ARGV[3])
redis.call('pexpire', KEYS[2], ARGV[1])
return 1
"""

PRESENCE_REMOVE = """
-- KEYS: data hash, expiry zset; ARGV: client id
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('zrem', KEYS[2], ARGV[1])
return 1
"""

PRESENCE_GET = """
-- KEYS: data hash, expiry zset; ARGV: now (unix s)
-- Drops the entries whose expiry passed (a crashed node's clients), then returns the rest.
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', ARGV[1])
for i = 1, #expired, 1000 do
  redis.call('hdel', KEYS[1], unpack(expired, i, math.min(i + 999, #expired)))
end
if #expired > 0 then
  redis.call('zremrangebyscore', KEYS[2], '-inf', ARGV[1])
end
return redis.call('hgetall', KEYS[1])
"""
