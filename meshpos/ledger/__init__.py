"""The durable op log and the views folded from it (SQLite)."""
