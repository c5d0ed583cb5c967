-- KEYS: members, seq, history, the node's members, epoch.
-- ARGV: channel, node, client, room, username, since (-1: none), floor,
-- presence limit, retention, a new epoch, the joiner's epoch ('': none).
-- Returns {'ok' | 'taken' | 'ahead', last seq, missed, the room's epoch}.
redis.call('SET', KEYS[5], ARGV[10], 'NX', 'EX', ARGV[9])
local epoch = redis.call('GET', KEYS[5])
local last = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[7]))
local since = tonumber(ARGV[6])
-- Counted in another life of the room: all that this one holds is new.
if since > 0 and ARGV[11] ~= '' and ARGV[11] ~= epoch then since = 0 end
if since > last then return {'ahead', last, {}, epoch} end
if redis.call('HSETNX', KEYS[1], ARGV[5], ARGV[2]) == 0 then return {'taken', last, {}, epoch} end
redis.call('SET', KEYS[2], last, 'EX', ARGV[9])
redis.call('EXPIRE', KEYS[5], ARGV[9])
redis.call('SADD', KEYS[4], cjson.encode({ARGV[4], ARGV[5]}))
local announce = redis.call('HLEN', KEYS[1]) <= tonumber(ARGV[8])
redis.call('PUBLISH', ARGV[1], cjson.encode({kind = 'joined', room = ARGV[4],
  username = ARGV[5], node = ARGV[2], client = ARGV[3], announce = announce,
  seq = last, epoch = epoch}))
local missed = {}
if since >= 0 and last > since then
  missed = redis.call('LRANGE', KEYS[3], -(last - since), -1)
end
return {'ok', last, missed, epoch}
