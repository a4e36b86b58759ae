"""The security audit: network exposure against the flow table, SSH, TLS, PostgreSQL,
hosts and leaked secrets, as a findings table (docs/security.md)."""
