-- wrk script: POST /orders with a unique Idempotency-Key per request, and the
-- bench client's bearer token from $FAULTBOOK_LEDGER_TOKEN (never on the command line).
local counter = 0
local auth = "Bearer " .. assert(os.getenv("FAULTBOOK_LEDGER_TOKEN"), "FAULTBOOK_LEDGER_TOKEN is not set")
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
    {["Content-Type"] = "application/json", ["Idempotency-Key"] = key, ["Authorization"] = auth}, body)
end
