-- After depart.lua. KEYS: the set of nodes. ARGV: channel, presence limit,
-- and a node to remove now ('' to remove only the nodes whose `alive` key
-- has expired). Returns how many nodes it removed.
local nodes = redis.call('SMEMBERS', KEYS[1])
if ARGV[3] ~= '' then nodes = {ARGV[3]} end
local gone = 0
for _, node in ipairs(nodes) do
  local prefix = 'chat:node:' .. node
  if ARGV[3] ~= '' or redis.call('EXISTS', prefix .. ':alive') == 0 then
    for _, entry in ipairs(redis.call('SMEMBERS', prefix .. ':members')) do
      local room, username = unpack(cjson.decode(entry))
      depart('chat:room:' .. room .. ':members', prefix .. ':members', room, username,
        node, ARGV[1], tonumber(ARGV[2]))
    end
    redis.call('DEL', prefix .. ':members', prefix .. ':alive')
    -- If the node was alive after all, its restore will announce its
    -- members again: the others were told they left.
    redis.call('SET', prefix .. ':reaped', 1, 'EX', 3600)
    redis.call('SREM', KEYS[1], node)
    gone = gone + 1
  end
end
return gone
