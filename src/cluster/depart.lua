-- Removes one member from a room and announces it: the start of leave.lua
-- and reap.lua, which call it. Does nothing unless `node` holds the name,
-- so a late leave can never remove a name a newer member holds.
local function depart(members, mine, room, username, node, channel, limit)
  if redis.call('HGET', members, username) ~= node then return 0 end
  local announce = redis.call('HLEN', members) <= limit
  redis.call('HDEL', members, username)
  redis.call('SREM', mine, cjson.encode({room, username}))
  redis.call('PUBLISH', channel, cjson.encode({kind = 'left', room = room,
    username = username, announce = announce}))
  return 1
end
