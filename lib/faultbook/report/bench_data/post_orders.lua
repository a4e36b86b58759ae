-- wrk script: POST /orders with a unique Idempotency-Key per request.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid
  math.randomseed(os.time() + thread_id)
  run = string.format("%x%04x", os.time(), math.random(0, 65535))
end

function request()
  counter = counter + 1
  local key = string.format("bench-%s-%d-%d", run, thread_id, counter)
  local body = string.format('{"customer": "bench-%d", "amount_cents": %d}', thread_id, counter)
  return wrk.format("POST", "/orders",
    {["Content-Type"] = "application/json", ["Idempotency-Key"] = key}, body)
end
