-- wrk script for the benchmark's floor: replays one phase of the request mix that
-- provisiond's initial cycle sends (searches, creates or membership/manager patches) against
-- a fresh sandbox, so that the daemon's time can be compared with a plain load generator's.
-- examples/bench.rs runs it; by hand:
--
--   wrk -t2 -c8 -d2s -s bench/floor.lua http://127.0.0.1:PORT -- \
--       MODE TOKEN THREADS USERS GROUPS [IDS_FILE MEMBER_BATCH]
--
-- MODE is `get` (user and group searches), `post` (user and group creates, every body
-- unique) or `patch` (membership patches of MEMBER_BATCH members each, on the first GROUPS
-- group ids of IDS_FILE, and manager patches on its user ids; IDS_FILE holds one `User <id>`
-- or `Group <id>` per line, as the sandbox handed them out). Requests about users and about
-- groups are mixed in the proportion USERS : GROUPS. THREADS is wrk's `-t`.
--
-- wrk runs for its whole `-d` even when every thread is done, so a phase is measured as a
-- rate: `done` prints the requests answered and the time taken, and the benchmark turns the
-- daemon's count of that phase into seconds at that rate.

local threads = {}
local next_index = 0

function setup(thread)
   thread:set("index", next_index)
   next_index = next_index + 1
   table.insert(threads, thread)
end

local mode, token, users, groups, member_batch, step
local user_ids, group_ids = {}, {}
local base
-- This thread sends requests number index, index + THREADS, index + 2 * THREADS, ...
local n = 0

function init(args)
   mode = args[1]
   token = args[2]
   step = tonumber(args[3])
   users = tonumber(args[4])
   groups = tonumber(args[5])
   member_batch = tonumber(args[7] or "100")
   base = wrk.path
   if string.sub(base, -1) ~= "/" then base = base .. "/" end
   if args[6] then
      for line in io.lines(args[6]) do
         local kind, id = string.match(line, "^(%a+) (.+)$")
         if kind == "User" then table.insert(user_ids, id) end
         if kind == "Group" and #group_ids < groups then table.insert(group_ids, id) end
      end
   end
   n = index
end

local function hdrs(body)
   local h = {}
   h["Authorization"] = "Bearer " .. token
   h["Accept"] = "application/scim+json, application/json"
   if body then h["Content-Type"] = "application/scim+json" end
   return h
end

local function urlencode(s)
   return (string.gsub(s, "[^%w%-%._~]", function(c)
      return string.format("%%%02X", string.byte(c))
   end))
end

-- Request number `i` (names stay unique however long the run).
local function build(i)
   local is_user = (i % (users + groups)) < users
   if mode == "get" then
      if is_user then
         local f = 'userName eq "floor' .. i .. '@contoso.com"'
         return wrk.format("GET", base .. "Users?filter=" .. urlencode(f), hdrs(false))
      end
      local f = 'displayName eq "Floor team ' .. i .. '"'
      return wrk.format("GET", base .. "Groups?excludedAttributes=members&filter=" .. urlencode(f),
                        hdrs(false))
   elseif mode == "post" then
      local body
      if is_user then
         body = string.format(
            '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User",' ..
            '"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],' ..
            '"userName":"floor%d@contoso.com","active":true,"displayName":"Floor User %d",' ..
            '"title":"Engineer","emails":[{"type":"work","value":"floor%d@contoso.com","primary":true}],' ..
            '"name":{"givenName":"Floor","familyName":"User %d"},' ..
            '"addresses":[{"type":"work","locality":"Oxford","country":"GB"}],' ..
            '"externalId":"floor%d",' ..
            '"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":' ..
            '{"department":"R&D","employeeNumber":"%d"}}', i, i, i, i, i, 100000 + i)
         return wrk.format("POST", base .. "Users", hdrs(true), body)
      end
      body = string.format(
         '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],' ..
         '"displayName":"Floor team %d","externalId":"floorgroup%d"}', i, i)
      return wrk.format("POST", base .. "Groups", hdrs(true), body)
   else
      if not is_user and #group_ids > 0 then
         -- Group number g always gets the same members, so groups end at MEMBER_BATCH
         -- members like the daemon's instead of growing with the run.
         local g = ((i % (users + groups)) - users) % #group_ids
         local members = {}
         for k = 0, member_batch - 1 do
            local u = user_ids[((g * member_batch + k) % #user_ids) + 1]
            table.insert(members, '{"value":"' .. u .. '"}')
         end
         local body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],' ..
            '"Operations":[{"op":"add","path":"members","value":[' ..
            table.concat(members, ",") .. ']}]}'
         return wrk.format("PATCH", base .. "Groups/" .. group_ids[g + 1], hdrs(true), body)
      end
      local u = user_ids[(i % #user_ids) + 1]
      local m = user_ids[((i * 7 + 1) % #user_ids) + 1]
      local body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],' ..
         '"Operations":[{"op":"replace","path":' ..
         '"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",' ..
         '"value":{"value":"' .. m .. '"}}]}'
      return wrk.format("PATCH", base .. "Users/" .. u, hdrs(true), body)
   end
end

function request()
   local i = n
   n = n + step
   return build(i)
end

function done(summary, latency, requests)
   io.write(string.format("FLOOR requests=%d duration_us=%d http_errors=%d socket_errors=%d\n",
                          summary.requests, summary.duration, summary.errors.status,
                          summary.errors.connect + summary.errors.read +
                          summary.errors.write + summary.errors.timeout))
end
