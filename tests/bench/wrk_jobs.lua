-- tests/bench/wrk_jobs.lua — wrk script for `make bench` figures (b) and (c).
--
--   BENCH_TOKEN=... wrk -t2 -c64 -d10s -s wrk_jobs.lua URL -- post|get
--
-- post: POST URL with body {"type":"noop","input":{}} (URL = .../v1/jobs);
-- get:  GET URL (URL = .../v1/jobs/<id>).
-- Both send "Authorization: Bearer $BENCH_TOKEN" (when set) over keep-alive
-- connections. done() prints one line for ops/bench.sh:
--   WRK rps=R p50_us=N p99_us=N requests=N status_errors=N socket_errors=N
-- (status_errors: answers >= 400; socket_errors: connect+read+write+timeout).

local token = os.getenv("BENCH_TOKEN")
local req

function init(args)
   local mode = args[1] or "get"
   local headers = {}
   if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end
   if mode == "post" then
      headers["Content-Type"] = "application/json"
      req = wrk.format("POST", nil, headers, '{"type":"noop","input":{}}')
   elseif mode == "get" then
      req = wrk.format("GET", nil, headers, nil)
   else
      error("wrk_jobs.lua: mode must be post or get, not " .. mode)
   end
end

function request()
   return req
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRK rps=%.1f p50_us=%d p99_us=%d requests=%d status_errors=%d socket_errors=%d\n",
      summary.requests / (summary.duration / 1e6), latency:percentile(50),
      latency:percentile(99), summary.requests, e.status,
      e.connect + e.read + e.write + e.timeout))
end
