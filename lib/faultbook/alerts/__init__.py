"""Alerts reach runbooks: the webhook receiver, its routes and its guardrails.

``payload`` parses Alertmanager's webhook payload; ``routes`` reads an inventory's
alert-routes.yml (which alert starts which runbook, with which parameters and
policy); ``guard`` holds the guardrails (firing only, dedupe, throttle, the run
lock); ``dispatch`` turns a notification into decisions and runs; ``server`` is
the HTTP service; ``service`` starts and stops it. docs/alerts.md describes them.
"""
