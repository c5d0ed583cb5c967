-- After depart.lua. KEYS: members, the node's members. ARGV: channel, node,
-- room, username, presence limit. Returns 1 if the member was removed.
return depart(KEYS[1], KEYS[2], ARGV[3], ARGV[4], ARGV[2], ARGV[1], tonumber(ARGV[5]))
