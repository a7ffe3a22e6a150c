"""The touch web till each terminal serves on localhost (Starlette + uvicorn, Jinja2 templates,
a little vanilla JavaScript, nothing fetched from the internet).

- `app.py`: `create_app(node_dir)`, the ASGI app; it registers the routes of `routes/` (auth,
  till, stock, manager, events) explicitly. `common.py`: what the routes share (the `Site`,
  session cookie, same-origin check, forms, page and action handlers).
- `backend.py`: the facade over the open till's units, each of one concern: `signin.py`
  (sessions, PIN sign-in, approvals), `cart.py` (the sale being rung), `checkout.py`
  (recording it), `escrow_wait.py` (awaiting redemption rights from peers), `printer.py`,
  `till_screen.py`, `stock_screen.py`, `manager_screen.py` (what each page shows). All run on
  the one thread of `worker.py`; `session.py` is one cashier's state.
- `live.py`: the watcher behind live updates (`PRAGMA data_version` and status.json).
- `views.py`: the state banner as plain data (pure).
- `server.py`: `meshpos web serve`, and the daemon's `[web] port` hook.
"""
