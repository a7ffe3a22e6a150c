"""The web till's routes, one module per screen; `meshpos.web.app.create_app` registers each
module's `routes(site)` explicitly."""
