"""The provisioned stack: HTTP and SQL access, PostgreSQL and failover, HAProxy and the VIP,
monitoring, health. Imports only the plumbing and ``faultbook.lab``."""
