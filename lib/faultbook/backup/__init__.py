"""Backups and restores: the pgBackRest repository and its WAL archive, restore targets,
restores onto a scratch host and their verification, the pre-flight, bad-change forensics
and the copy-back repair. Imports the plumbing, ``faultbook.lab`` and ``faultbook.stack``."""
