"""The HQ HTTP API's handlers, one module per group of endpoints; meshpos.hq.app registers them.
Shared request handling (limits, signatures, the admin token, error bodies) is in common.py."""
