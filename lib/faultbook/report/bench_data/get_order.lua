-- wrk script: GET the URL given on the command line with the bench client's
-- bearer token from $FAULTBOOK_LEDGER_TOKEN (never on the command line).
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("FAULTBOOK_LEDGER_TOKEN"), "FAULTBOOK_LEDGER_TOKEN is not set")
