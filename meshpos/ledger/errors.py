"""The errors a node database raises, so an entry point can report one without naming a driver.

A node database is plain SQLite or SQLCipher (meshpos/ledger/encryption.py); the two drivers have
separate exception classes, and only the ledger should know that.
"""

from __future__ import annotations

import sqlite3

from sqlcipher3 import dbapi2 as sqlcipher_dbapi2

DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.DatabaseError,
    sqlcipher_dbapi2.DatabaseError,
)
