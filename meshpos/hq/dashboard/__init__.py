"""HQ's dashboard for a chain's people: stores online and behind, sales with charts, stock,
loyalty, catalogue and prices, card payments and floats, what needs a look; per-person accounts
with roles (meshpos.hq.accounts). Server-rendered (Starlette + Jinja2, like the web till), no
script and nothing from a CDN. docs/hq-dashboard.md describes each page.

    routes      the URL table and the role each action needs; signing in and out
    site        templates, sessions, CSRF and origin checks, the page and action handlers
    pages       what each page reads and shows
    actions     what each form does (ops signed by HQ in the person's name)
    forms       reading form fields, with refusals that say what to change
    charts      server-rendered SVG charts
    words       conflicts in plain words
"""
