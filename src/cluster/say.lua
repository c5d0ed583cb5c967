-- KEYS: members, seq, history, epoch.
-- ARGV: channel, node, room, username, content, timestamp, floor, history
-- length, retention. Returns the message's seq, or -1 when this node does
-- not hold the name (Redis lost it, and the node has not restored it yet).
if redis.call('HGET', KEYS[1], ARGV[4]) ~= ARGV[2] then return -1 end
local seq = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[7])
if seq <= floor then
  seq = floor + 1
  redis.call('SET', KEYS[2], seq)
end
local event = cjson.encode({kind = 'said', room = ARGV[3], seq = seq,
  username = ARGV[4], content = ARGV[5], timestamp = ARGV[6]})
redis.call('RPUSH', KEYS[3], event)
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[8]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[9])
redis.call('EXPIRE', KEYS[3], ARGV[9])
redis.call('EXPIRE', KEYS[4], ARGV[9])
redis.call('PUBLISH', ARGV[1], event)
return seq
