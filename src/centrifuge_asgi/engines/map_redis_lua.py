"""Lua scripts of the Redis map broker (one atomic script per operation).

Keys of one channel (``T`` = the channel, in ``{}`` in a cluster):
``P.map.state.T`` HASH key → record, ``P.map.off.T`` HASH key → offset,
``P.map.rm.T`` HASH key → removal record, ``P.map.exp.T`` ZSET key → expire-at (ms),
``P.map.ver.T`` HASH key → version (and ``key:e`` → version epoch),
``P.map.stream.T`` STREAM (ID ``<offset>-0``, field ``d`` = record),
``P.map.meta.T`` HASH ``e`` epoch, ``s`` top offset, ``h`` has stream, ``n`` stream size,
``t`` stream TTL (ms), ``P.map.keys.T`` ZSET of the keys, all with score 0 (pages in key
order with ZRANGEBYLEX). An idempotency result is its own key (``P.map.res.T.<key>``).

Records are opaque to the scripts (msgpack made by Python, see ``map_redis.py``); a
removal fans out the removal record Python stored with the entry. Every change is
published as ``<offset>:<epoch>:<n>:<previous record><record>`` on ``P.map.client.T``,
where the previous record of the key (``n`` bytes) is there only for a ``delta`` publish
(the base of a fossil delta) and ``n`` is 0 otherwise.

Offsets and versions are uint64, more than a Lua number (a double) holds exactly: the
stream ID a read starts at comes from Python as text, versions stay decimal text
(compared by :data:`~.redis_lua.NEWER`, stored as given) and offsets made by HINCRBY are
formatted with ``%d``.
"""

from __future__ import annotations

from .redis_lua import NEWER

# Needs meta, new_epoch in scope: the channel's epoch, made (top offset 0) when it has none.
_EPOCH = """
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = new_epoch
  redis.call('HSET', meta, 'e', epoch, 's', 0)
end
"""

# Needs meta, epoch, res, expected_offset, expected_epoch in scope: the top offset; returns
# early for a repeated idempotency key or a position mismatch.
_TOP_UNLESS_DONE = """
local top = tonumber(redis.call('HGET', meta, 's'))
if res ~= '' then
  local done = redis.call('GET', res)
  if done then return {done, epoch, 'idempotency'} end
end
if expected_offset >= 0 and (expected_epoch ~= epoch or expected_offset ~= top) then
  return {top, epoch, 'position_mismatch'}
end
"""

# KEYS: state, off, rm, exp, ver, stream, meta, keys, result ("" when none)
# ARGV: key, record, removal, key_mode, key_ttl_ms, has_stream, stream_size, stream_ttl_ms,
#       meta_ttl_ms, new_epoch, version, version_epoch, expected_offset (-1: none),
#       expected_epoch, result_ttl_ms, now_ms, topic, publish_command, with_prev (0/1),
#       refresh_ttl_on_suppress (0/1)
PUBLISH = (
    NEWER
    + """
local state, off, rm, exp, ver, stream, meta, keyset, res = unpack(KEYS)
local key, record, removal = ARGV[1], ARGV[2], ARGV[3]
local key_mode, key_ttl = ARGV[4], tonumber(ARGV[5])
local has_stream, stream_size, stream_ttl = ARGV[6] == '1', tonumber(ARGV[7]), tonumber(ARGV[8])
local meta_ttl, new_epoch = tonumber(ARGV[9]), ARGV[10]
local version, version_epoch = ARGV[11], ARGV[12]
local expected_offset, expected_epoch = tonumber(ARGV[13]), ARGV[14]
local result_ttl, now = tonumber(ARGV[15]), tonumber(ARGV[16])
"""
    + _EPOCH
    + """
redis.call('HSET', meta, 'h', has_stream and 1 or 0, 'n', stream_size, 't', stream_ttl)
if meta_ttl > 0 then redis.call('PEXPIRE', meta, meta_ttl) else redis.call('PERSIST', meta) end
"""
    + _TOP_UNLESS_DONE
    + """
local previous = redis.call('HGET', state, key)
local exists = previous ~= false
if key_mode == 'if_new' and exists then
  if ARGV[20] == '1' and key_ttl > 0 then redis.call('ZADD', exp, now + key_ttl, key) end
  return {top, epoch, 'key_exists'}
end
if key_mode == 'if_exists' and not exists then return {top, epoch, 'key_not_found'} end
if version ~= '0' then
  local current = redis.call('HGET', ver, key) or '0'
  local current_epoch = redis.call('HGET', ver, key .. ':e') or ''
  if current ~= '0' and current_epoch == version_epoch and not newer(version, current) then
    return {top, epoch, 'version'}
  end
  redis.call('HSET', ver, key, version, key .. ':e', version_epoch)
end
local offset = 0
if has_stream then
  top = redis.call('HINCRBY', meta, 's', 1)
  offset = top
  redis.call('XADD', stream, 'MAXLEN', stream_size, string.format('%d-0', top), 'd', record)
  redis.call('PEXPIRE', stream, stream_ttl)
end
redis.call('HSET', state, key, record)
redis.call('ZADD', keyset, 0, key)
redis.call('HSET', off, key, offset)
redis.call('HSET', rm, key, removal)
if key_ttl > 0 then
  redis.call('ZADD', exp, now + key_ttl, key)
else
  redis.call('ZREM', exp, key)
end
if res ~= '' then redis.call('SET', res, top, 'PX', result_ttl) end
if ARGV[19] ~= '1' or not previous then previous = '' end
local message = string.format('%d:', offset) .. epoch .. ':' .. #previous .. ':' .. previous
  .. record
redis.call(ARGV[18], ARGV[17], message)
return {top, epoch, ''}
"""
)

# Removes ``key`` (inline: used by REMOVE and EXPIRE). Needs state, off, rm, exp, ver,
# stream, meta, epoch, topic, publish command in scope; returns the new top.
_REMOVE_KEY = """
local function remove_key(key, record)
  redis.call('HDEL', state, key)
  redis.call('ZREM', keyset, key)
  redis.call('HDEL', off, key)
  redis.call('HDEL', rm, key)
  redis.call('HDEL', ver, key, key .. ':e')
  redis.call('ZREM', exp, key)
  local offset = 0
  local top = tonumber(redis.call('HGET', meta, 's') or '0')
  if redis.call('HGET', meta, 'h') == '1' then
    top = redis.call('HINCRBY', meta, 's', 1)
    offset = top
    local id = string.format('%d-0', top)
    redis.call('XADD', stream, 'MAXLEN', redis.call('HGET', meta, 'n'), id, 'd', record)
    redis.call('PEXPIRE', stream, tonumber(redis.call('HGET', meta, 't')))
  end
  redis.call(publish_command, topic, string.format('%d:', offset) .. epoch .. ':0:' .. record)
  return top
end
"""

# KEYS: state, off, rm, exp, ver, stream, meta, keys, result ("" when none)
# ARGV: key, removal override ("" = the stored one), new_epoch, expected_offset (-1: none),
#       expected_epoch, result_ttl_ms, topic, publish_command
REMOVE = (
    """
local state, off, rm, exp, ver, stream, meta, keyset, res = unpack(KEYS)
local key, override, new_epoch = ARGV[1], ARGV[2], ARGV[3]
local expected_offset, expected_epoch = tonumber(ARGV[4]), ARGV[5]
local result_ttl, topic, publish_command = tonumber(ARGV[6]), ARGV[7], ARGV[8]
"""
    + _EPOCH
    + _TOP_UNLESS_DONE
    + """
local removal = redis.call('HGET', rm, key)
if not removal then return {top, epoch, 'key_not_found'} end
if override ~= '' then removal = override end
"""
    + _REMOVE_KEY
    + """
top = remove_key(key, removal)
if res ~= '' then redis.call('SET', res, top, 'PX', result_ttl) end
return {top, epoch, ''}
"""
)

# KEYS: state, off, rm, exp, ver, stream, meta, keys
# ARGV: now_ms, batch, topic, publish_command
# Returns {removed count, the next expire-at in ms or -1}.
EXPIRE = (
    """
local state, off, rm, exp, ver, stream, meta, keyset = unpack(KEYS)
local now, batch, topic, publish_command = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local epoch = redis.call('HGET', meta, 'e')
local due = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, batch)
local count = 0
if epoch then
"""
    + _REMOVE_KEY
    + """
  for _, key in ipairs(due) do
    local removal = redis.call('HGET', rm, key)
    if removal then
      remove_key(key, removal)
      count = count + 1
    else
      redis.call('ZREM', exp, key)
    end
  end
end
local next_due = redis.call('ZRANGE', exp, 0, 0, 'WITHSCORES')
if next_due[2] then return {count, next_due[2]} end
return {count, -1}
"""
)

# KEYS: meta, stream
# ARGV: new_epoch, read (0/1), reverse (0/1), first stream ID ('(<since>-0', or '-'/'+'
#       from the oldest/newest), limit (-1: all)
# Returns {top, epoch, first retained offset (0: none), entries}.
READ = (
    """
local meta, stream, new_epoch = KEYS[1], KEYS[2], ARGV[1]
"""
    + _EPOCH
    + """
local top = tonumber(redis.call('HGET', meta, 's') or '0')
local first = 0
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if head[1] then first = tonumber(string.match(head[1][1], '^(%d+)')) end
if ARGV[2] == '0' then return {top, epoch, first, {}} end
local from, limit = ARGV[4], tonumber(ARGV[5])
local read, to = 'XRANGE', '+'
if ARGV[3] == '1' then read, to = 'XREVRANGE', '-' end
local entries
if limit > 0 then
  entries = redis.call(read, stream, from, to, 'COUNT', limit)
else
  entries = redis.call(read, stream, from, to)
end
return {top, epoch, first, entries}
"""
)

# KEYS: meta, state, off, keys
# ARGV: new_epoch, cursor ("" = from the start), limit (-1: all), key ("" = a page)
# Returns {top, epoch, next cursor ("" = last page), {key, record, offset, ...}}.
STATE_PAGE = (
    """
local meta, state, off, keyset = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local new_epoch = ARGV[1]
"""
    + _EPOCH
    + """
local top = tonumber(redis.call('HGET', meta, 's') or '0')
local limit = tonumber(ARGV[3])
local names
local next_cursor = ''
if ARGV[4] ~= '' then
  names = {ARGV[4]}
else
  local lower = '-'
  if ARGV[2] ~= '' then lower = '(' .. ARGV[2] end
  if limit > 0 then
    names = redis.call('ZRANGEBYLEX', keyset, lower, '+', 'LIMIT', 0, limit + 1)
    if #names > limit then
      names[#names] = nil
      next_cursor = names[#names]
    end
  else
    names = redis.call('ZRANGEBYLEX', keyset, lower, '+')
  end
end
local out = {}
for _, name in ipairs(names) do
  local record = redis.call('HGET', state, name)
  if record then
    out[#out + 1] = name
    out[#out + 1] = record
    out[#out + 1] = redis.call('HGET', off, name) or '0'
  end
end
return {top, epoch, next_cursor, out}
"""
)
