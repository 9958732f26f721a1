"""Web pages served by the API: a shop front to try shoprec as a shopper, and a read-only
operator console (data checks, pipeline runs, model versions and their evaluations, live
traffic). Server-side Jinja2 templates (autoescaped) and a little plain JavaScript; no build
step, no CDN. docs/web.md."""
