"""The touch web till each terminal serves on localhost (Starlette + uvicorn, Jinja2 templates,
a little vanilla JavaScript, nothing fetched from the internet).

- `app.py`: `create_app(node_dir)`, the ASGI app: pages, form actions, fragments, `/events` (SSE).
- `backend.py`: the one worker thread that owns the Terminal; forms become service-layer calls.
- `live.py`: the watcher behind live updates (`PRAGMA data_version` and status.json).
- `views.py`: the state banner as plain data (pure).
- `server.py`: `meshpos web serve`, and the daemon's `[web] port` hook.
"""
