-- wrk script: sends pre-signed Rivya deliveries, one per line of a file:
--   webhook-id <TAB> webhook-timestamp <TAB> webhook-signature <TAB> body
-- Usage: wrk ... -s feed.lua URL -- FILE
-- Each request is sent once; if a run outlasts the file, it starts over (the report says so).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  requests = {}
  for line in io.lines(args[1]) do
    local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", nil, {
      ["content-type"] = "application/json",
      ["webhook-id"] = id,
      ["webhook-timestamp"] = ts,
      ["webhook-signature"] = sig,
    }, body)
  end
  sent = 0
end

function request()
  sent = sent + 1
  return requests[(sent - 1) % #requests + 1]
end

function done(summary, latency, _)
  local wrapped = 0
  for _, thread in ipairs(threads) do
    if thread:get("sent") > #thread:get("requests") then wrapped = 1 end
  end
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), wrapped))
end
