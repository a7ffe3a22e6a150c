"""Backups of a node's database: the sealed file format (format.py), its keys (keys.py), taking
one (create.py), where copies go and how many are kept (targets.py), the daemon's schedule
(schedule.py), and verifying and restoring (restore.py)."""
