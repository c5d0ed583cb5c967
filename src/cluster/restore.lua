-- KEYS: members, seq, history, the node's members, the node's `reaped`
-- mark, epoch. ARGV: channel, node, room, floor, presence limit,
-- retention, the room's epoch as the node knows it ('': none), then the
-- names this node's members have there. Returns {names another node
-- holds now, the messages after floor}. A name is announced again only if
-- the node was reaped: after a Redis restart nobody was told it left.
local node, room, floor = ARGV[2], ARGV[3], tonumber(ARGV[4])
local last = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), floor)
redis.call('SET', KEYS[2], last, 'EX', ARGV[6])
-- The same life goes on: a Redis that lost the epoch gets it back.
if ARGV[7] ~= '' then redis.call('SET', KEYS[6], ARGV[7], 'NX', 'EX', ARGV[6]) end
local epoch = redis.call('GET', KEYS[6]) or ''
redis.call('EXPIRE', KEYS[6], ARGV[6])
local reaped = redis.call('EXISTS', KEYS[5]) == 1
local taken = {}
for i = 8, #ARGV do
  local holder = redis.call('HGET', KEYS[1], ARGV[i])
  if holder == false then
    redis.call('HSET', KEYS[1], ARGV[i], node)
    local announce = redis.call('HLEN', KEYS[1]) <= tonumber(ARGV[5])
    if reaped then
      redis.call('PUBLISH', ARGV[1], cjson.encode({kind = 'joined', room = room,
        username = ARGV[i], node = node, announce = announce, seq = last,
        epoch = epoch}))
    end
  elseif holder ~= node then
    table.insert(taken, ARGV[i])
  end
  if holder == false or holder == node then
    redis.call('SADD', KEYS[4], cjson.encode({room, ARGV[i]}))
  end
end
local missed = {}
if last > floor then missed = redis.call('LRANGE', KEYS[3], -(last - floor), -1) end
return {taken, missed}
