"""The CX review pages: customers a delivery is about to cost, why, and what drives loyalty.

Served by the prediction service under ``/review`` as plain server-rendered HTML (Jinja
templates in ``serving/templates``, a small chart script and a stylesheet from
``serving/static``: nothing from the internet). The pages read the latest scoring that
``eddy score-customers`` stored (``latest.parquet``, ``latest-history.parquet``,
``latest-drivers.json`` in the scores folder), re-read when it changes.

Access: with ``EDDY_REVIEW_TOKEN`` set, every page and the CSV export answer 401 unless
the request carries ``Authorization: Bearer <token>`` or the cookie the login form sets.
Customer pages are addressed by a keyed hash of the customer id, so ids never reach the
access log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from eddy import settings
from runtime.reasons import actionable_first, churn_actionable
from runtime.reasons import churn_words as words
from runtime.store import read_scoring

HERE = Path(__file__).resolve().parent
PER_PAGE = 50
COOKIE = "eddy_review"
SORTS = {"risk": ("churn_risk", False), "days_late": ("days_late", False), "judged": ("delivery_judged_at", False)}
#: columns of the CSV export, in order
EXPORT = ["customer_id", "churn_risk", "order_id", "delivery_judged_at", "carrier", "service_level", "origin_region",
          "destination_region", "days_late", "exceptions", "failed_attempts", "returned", "parcels_missing", "rating",
          "contacts", "orders_so_far", "new_customer", "top_reasons", "scored_at", "model_version"]
ACT = " (you can act on this)"  # marks a delivery factor the retailer or carrier controls
_SECRET = secrets.token_bytes(32)  # per process: customer links are not guessable


class BadFilter(ValueError):
    """A query parameter that cannot be read; the message names it."""


def customer_key(customer_id: str) -> str:
    return hmac.new(_SECRET, str(customer_id).encode(), hashlib.sha256).hexdigest()[:20]


class Store:
    """The latest scoring, loaded once per change of ``latest.parquet``."""

    def __init__(self) -> None:
        self._stamp: float | None = None
        self._cached = None

    def get(self):
        latest = settings.scores_dir() / "latest.parquet"
        if not latest.exists():
            return None
        stamp = latest.stat().st_mtime
        if self._stamp != stamp:
            scoring = read_scoring(settings.scores_dir())
            scoring.table["key"] = [customer_key(c) for c in scoring.table.customer_id]
            scoring.table["judged_day"] = scoring.table.delivery_judged_at.dt.strftime("%Y-%m-%d")
            self._cached, self._stamp = scoring, stamp
        return self._cached


STORE = Store()
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
TEMPLATES.filters["words"] = words
TEMPLATES.filters["actionable"] = churn_actionable
TEMPLATES.filters["actionable_first"] = actionable_first
TEMPLATES.filters["pct"] = lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.0f}%"
TEMPLATES.filters["num"] = lambda v, d=1: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{d}f}"


# ------------------------------------------------------------------------ access


def _authorised(request: Request) -> bool:
    token = settings.review_token()
    if token is None:
        return True
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and hmac.compare_digest(header[7:].strip(), token):
        return True
    return hmac.compare_digest(request.cookies.get(COOKIE, ""), _cookie_value(token))


def _cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"eddy-review-session", hashlib.sha256).hexdigest()


def _page(name: str, status: int = 200, **context) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), status_code=status)


def _login_page(request: Request, message: str = "", next_page: str | None = None) -> HTMLResponse:
    return _page("login.html", 401, message=message, next=_safe_next(next_page or request.url.path))


def _safe_next(target: str) -> str:
    """Where to go after signing in: a review page of ours, never the login form or elsewhere."""
    ok = target.startswith("/review") and not target.startswith("/review/login") and "//" not in target
    return target if ok else "/review"


def guarded(handler):
    """The page, or 401 (the login form for pages, plain text for the CSV)."""
    async def wrapper(request: Request) -> Response:
        if not _authorised(request):
            if request.url.path.endswith(".csv"):
                return PlainTextResponse("401: the review token is required (Authorization: Bearer ...)", status_code=401)
            return _login_page(request)
        try:
            return await handler(request)
        except BadFilter as exc:
            return _page("message.html", 400, title="Bad filter", message=str(exc))
    return wrapper


async def login(request: Request) -> Response:
    token = settings.review_token()
    if request.method == "GET" or token is None:
        return _login_page(request) if token else RedirectResponse("/review", status_code=303)
    form = await request.form()
    target = _safe_next(str(form.get("next") or "/review"))
    if not hmac.compare_digest(str(form.get("token", "")), token):
        return _login_page(request, "That token is not right.", target)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, _cookie_value(token), httponly=True, samesite="strict", path="/review")
    return response


# ----------------------------------------------------------------------- filters


@dataclass
class Filters:
    min_risk: float = 0.0
    carrier: str = ""
    region: str = ""
    since: str = ""
    until: str = ""
    sort: str = "risk"
    page: int = 1

    @classmethod
    def from_query(cls, q) -> "Filters":
        f = cls(carrier=q.get("carrier", ""), region=q.get("region", ""), sort=q.get("sort", "risk") or "risk")
        f.min_risk = _number(q.get("min_risk"), "min_risk", 0.0, 0.0, 1.0)
        f.page = int(_number(q.get("page"), "page", 1, 1, 1e9))
        for name in ("since", "until"):
            value = q.get(name, "")
            if value:
                try:
                    pd.Timestamp(value)
                except ValueError:
                    raise BadFilter(f"{name}: {value!r} is not a date (use YYYY-MM-DD)") from None
            setattr(f, name, value)
        if f.sort not in SORTS:
            raise BadFilter(f"sort: {f.sort!r} is not one of {', '.join(SORTS)}")
        return f

    def apply(self, table: pd.DataFrame) -> pd.DataFrame:
        keep = table.churn_risk >= self.min_risk
        if self.carrier:
            keep &= table.carrier == self.carrier
        if self.region:
            keep &= table.destination_region == self.region
        if self.since:
            keep &= table.judged_day >= pd.Timestamp(self.since).strftime("%Y-%m-%d")
        if self.until:
            keep &= table.judged_day <= pd.Timestamp(self.until).strftime("%Y-%m-%d")
        column, ascending = SORTS[self.sort]
        return table[keep].sort_values([column, "customer_id"], ascending=[ascending, True], na_position="last")

    def query(self, **changes) -> str:
        values = {k: v for k, v in {**self.__dict__, **changes}.items() if v not in ("", None, 0, 0.0, "risk", 1)}
        return urlencode(values)


def _number(value, name: str, default: float, low: float, high: float) -> float:
    if value in (None, ""):
        return default
    try:
        x = float(value)
    except ValueError:
        raise BadFilter(f"{name}: {value!r} is not a number") from None
    if not low <= x <= high or math.isnan(x):
        raise BadFilter(f"{name}: {value!r} must be between {low:g} and {high:g}")
    return x


# ------------------------------------------------------------------------ pages


def _no_scoring() -> HTMLResponse:
    return _page("message.html", 200, title="No scoring yet",
                 message="Run `eddy score-customers DATA_FOLDER` (without --out); this page shows its latest run.")


@guarded
async def at_risk(request: Request) -> Response:
    scoring = STORE.get()
    if scoring is None:
        return _no_scoring()
    f = Filters.from_query(request.query_params)
    table = scoring.table
    shown = f.apply(table)
    pages = max(1, math.ceil(len(shown) / PER_PAGE))
    f.page = min(f.page, pages)
    rows = shown.iloc[(f.page - 1) * PER_PAGE: f.page * PER_PAGE]
    return _page("list.html", rows=rows.to_dict("records"), f=f, total=len(table), matching=len(shown), pages=pages,
                 carriers=sorted(table.carrier.dropna().unique()), regions=sorted(table.destination_region.dropna().unique()),
                 scored_at=table.scored_at.iloc[0] if len(table) else None,
                 model_version=table.model_version.iloc[0] if len(table) else "", words=words)


@guarded
async def export_csv(request: Request) -> Response:
    scoring = STORE.get()
    if scoring is None:
        return PlainTextResponse("no scoring yet: run eddy score-customers", status_code=404)
    shown = Filters.from_query(request.query_params).apply(scoring.table).copy()
    shown["top_reasons"] = ["; ".join(words(r["feature"]) for r in actionable_first(list(rs))) for rs in shown.reasons]
    csv = shown.reindex(columns=EXPORT).to_csv(index=False)
    return Response(csv, media_type="text/csv",
                    headers={"content-disposition": 'attachment; filename="eddy-at-risk.csv"'})


@guarded
async def customer(request: Request) -> Response:
    scoring = STORE.get()
    if scoring is None:
        return _no_scoring()
    match = scoring.table[scoring.table.key == request.path_params["key"]]
    if match.empty:
        return _page("message.html", 404, title="Not found",
                     message="No customer with this link in the latest scoring (links change with every scoring).")
    row = match.iloc[0].to_dict()
    h = scoring.history
    orders = h[h.customer_id == row["customer_id"]].sort_values("ordered_at", ascending=False) if len(h) else h
    bars = [{"label": f"{words(r['feature'])} = {_show(r['value'])}{ACT if churn_actionable(r['feature']) else ''}",
             "value": r["effect_log_odds"]} for r in actionable_first(list(row["reasons"]))]
    return _page("customer.html", c=row, orders=orders.to_dict("records"), bars=json.dumps(bars), words=words)


@guarded
async def drivers(request: Request) -> Response:
    scoring = STORE.get()
    if scoring is None:
        return _no_scoring()
    d = scoring.drivers
    bars = [{"label": words(i["feature"]) + (ACT if churn_actionable(i["feature"]) else ""), "value": i["mean_abs_shap"]}
            for i in d.get("importance", [])]
    plots = [{"feature": k, "title": words(k), "data": json.dumps(v)} for k, v in d.get("dependence", {}).items()]
    return _page("drivers.html", d=d, bars=json.dumps(bars), plots=plots)


def _show(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "none"
    return f"{v:,.1f}" if isinstance(v, (int, float)) else str(v)


ROUTES = [
    Route("/review", at_risk),
    Route("/review/export.csv", export_csv),
    Route("/review/drivers", drivers),
    Route("/review/customer/{key}", customer),
    Route("/review/login", login, methods=["GET", "POST"]),
    Mount("/review/static", StaticFiles(directory=HERE / "static"), name="review-static"),
]
