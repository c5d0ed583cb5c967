-- KEYS: members, seq, history, the node's members.
-- ARGV: channel, node, client, room, username, since (-1: none), floor,
-- presence limit, retention. Returns {'ok' | 'taken' | 'ahead', last seq,
-- missed}.
local last = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[7]))
local since = tonumber(ARGV[6])
if since > last then return {'ahead', last, {}} end
if redis.call('HSETNX', KEYS[1], ARGV[5], ARGV[2]) == 0 then return {'taken', last, {}} end
redis.call('SET', KEYS[2], last, 'EX', ARGV[9])
redis.call('SADD', KEYS[4], cjson.encode({ARGV[4], ARGV[5]}))
local announce = redis.call('HLEN', KEYS[1]) <= tonumber(ARGV[8])
redis.call('PUBLISH', ARGV[1], cjson.encode({kind = 'joined', room = ARGV[4],
  username = ARGV[5], node = ARGV[2], client = ARGV[3], announce = announce,
  seq = last}))
local missed = {}
if since >= 0 and last > since then
  missed = redis.call('LRANGE', KEYS[3], -(last - since), -1)
end
return {'ok', last, missed}
