"""The pages' Jinja2 templates (every one autoescaped) and the headers of every page answer."""
from __future__ import annotations

import datetime as dt
import math
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.responses import HTMLResponse

# Pages run only their own scripts and styles and talk only to this server; no page may
# frame them. Fragments hold personal recommendations: never cached.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _number(value, digits: int = 3) -> str:
    """A number for a table: ints with thousands separators, floats with ``digits`` decimals,
    ``–`` when missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _utc(epoch_s) -> str:
    if epoch_s is None:
        return "–"
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _shop_url(root: str, **params) -> str:
    """A shop-front URL (``/shop?user=...&item=...``), parameters without a value left out."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{root}/shop" + (f"?{query}" if query else "")


ENV = Environment(loader=PackageLoader("serving.web", "templates"), autoescape=True,
                  undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
ENV.filters.update(number=_number, utc=_utc)
ENV.globals.update(shop_url=_shop_url)


def render(template: str, request=None, status: int = 200, **context) -> HTMLResponse:
    """``template`` rendered with ``context`` as an HTML answer with the security headers;
    ``root`` (the prefix of the pages' own URLs) is the request's root path."""
    context.setdefault("root", request.scope.get("root_path", "") if request else "")
    return HTMLResponse(ENV.get_template(template).render(**context), status_code=status,
                        headers=SECURITY_HEADERS)
