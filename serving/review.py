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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from eddy import settings
from runtime.reasons import actionable_first, churn_actionable
from runtime.reasons import churn_words as words
from runtime.store import latest_run, read_scoring

HERE = Path(__file__).resolve().parent
PER_PAGE = 50
COOKIE = "eddy_review"
CSRF_COOKIE = "eddy_login_csrf"
SORTS = {"risk": ("churn_risk", False), "days_late": ("days_late", False), "judged": ("delivery_judged_at", False)}
#: columns of the CSV export, in order
EXPORT = ["customer_id", "churn_risk", "risk_percentile", "actionable_share", "order_id", "delivery_judged_at", "carrier", "service_level", "origin_region",
          "destination_region", "days_late", "exceptions", "failed_attempts", "returned", "parcels_missing", "rating",
          "contacts", "orders_so_far", "new_customer", "top_reasons", "scored_at", "model_version"]
ACT = " (you can act on this)"  # marks a delivery factor the retailer or carrier controls


class BadFilter(ValueError):
    """A query parameter that cannot be read; the message names it."""


def customer_key(customer_id: str, key: bytes | None = None) -> str:
    """A customer's link: a keyed hash, not guessable, the same on every worker and restart."""
    return hmac.new(key or settings.link_key(), str(customer_id).encode("utf-8", "surrogatepass"),
                    hashlib.sha256).hexdigest()[:20]


class Store:
    """The latest scoring, loaded once per new scoring."""

    def __init__(self) -> None:
        self._stamp: str | None = None
        self._cached = None

    def get(self):
        run = latest_run(settings.scores_dir())
        if run is None:
            return None
        stamp = run.name
        if self._stamp != stamp:
            scoring = read_scoring(settings.scores_dir())
            key = settings.link_key()
            scoring.table["key"] = [customer_key(c, key) for c in scoring.table.customer_id]
            scoring.table["judged_day"] = scoring.table.delivery_judged_at.dt.strftime("%Y-%m-%d")
            self._cached, self._stamp = scoring, stamp
        return self._cached


STORE = Store()
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
TEMPLATES.filters["words"] = words
TEMPLATES.filters["actionable"] = churn_actionable
TEMPLATES.filters["actionable_first"] = actionable_first
def _is_number(v) -> bool:  # a scoring stored by an older version lacks newer columns (undefined here)
    return isinstance(v, (int, float, np.number)) and not (isinstance(v, float) and math.isnan(v))


# risks show a decimal: calibrated risks near the top differ by tenths of a point
TEMPLATES.filters["pct"] = lambda v, d=0: f"{100 * v:.{d}f}%" if _is_number(v) else ""
TEMPLATES.filters["num"] = lambda v, d=1: f"{v:,.{d}f}" if _is_number(v) else ""


# ------------------------------------------------------------------------ access


def _authorised(request: Request) -> bool:
    token = settings.review_token()
    if token is None:
        return True
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and _same(header[7:].strip(), token):
        return True
    return session_valid(request.cookies.get(COOKIE, ""), token)


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of any text (non-ASCII included, which compare_digest
    refuses as str)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _session_key(token: str) -> bytes:
    # Derived from the token: changing the token signs every session out.
    return hmac.new(token.encode("utf-8", "surrogatepass"), b"eddy-review-session-v2", hashlib.sha256).digest()


def new_session(token: str, now: float | None = None) -> str:
    """A signed session for one sign-in: its own random id and an expiry time."""
    expires = int((now or time.time()) + settings.review_session_hours() * 3600)
    payload = f"{secrets.token_urlsafe(16)}.{expires}"
    return f"{payload}.{hmac.new(_session_key(token), payload.encode(), hashlib.sha256).hexdigest()}"


def session_valid(cookie: str, token: str, now: float | None = None) -> bool:
    payload, _, signature = cookie.rpartition(".")
    if not payload or not _same(signature, hmac.new(_session_key(token), payload.encode("utf-8", "surrogatepass"),
                                                    hashlib.sha256).hexdigest()):
        return False
    expires = payload.rpartition(".")[2]
    return expires.isdigit() and int(expires) > (now or time.time())


class Attempts:
    """Failed sign-ins per client address in a sliding minute: beyond the limit, 429."""

    def __init__(self, limit: int = 5, window_s: float = 60.0):
        self.limit, self.window_s, self.failures = limit, window_s, {}

    def blocked(self, client: str) -> float:
        """Seconds to wait (0 when the client may try)."""
        now = time.monotonic()
        recent = [t for t in self.failures.get(client, []) if now - t < self.window_s]
        self.failures[client] = recent
        return (self.window_s - (now - recent[0])) if len(recent) >= self.limit else 0.0

    def failed(self, client: str) -> None:
        self.failures.setdefault(client, []).append(time.monotonic())
        if len(self.failures) > 10_000:  # bounded memory under a spray of addresses
            self.failures.pop(next(iter(self.failures)))


ATTEMPTS = Attempts()


def _page(name: str, status: int = 200, **context) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), status_code=status)


def _login_page(request: Request, message: str = "", next_page: str | None = None, status: int = 401) -> HTMLResponse:
    """The sign-in form, with a fresh anti-forgery value in the form and in a cookie."""
    csrf = secrets.token_urlsafe(16)
    page = _page("login.html", status, message=message, next=_safe_next(next_page or request.url.path), csrf=csrf)
    page.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/review/login",
                    secure=settings.cookie_secure())
    return page


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
        key = _answer_key(request)
        cached = ANSWERS.get(key)
        if cached is not None:
            return cached
        try:
            # Filtering, sorting and CSV are pandas work: off the event loop, so /eta
            # answers while someone downloads the at-risk list.
            response = await run_in_threadpool(handler, request)
        except BadFilter as exc:
            return _page("message.html", 400, title="Bad filter", message=str(exc))
        if response.status_code == 200 and key is not None:
            ANSWERS.put(key, response)
        return response
    return wrapper


def _answer_key(request: Request) -> tuple | None:
    """What a page's answer depends on: the scoring it shows and the request's path and
    filters (the pages hold nothing per user)."""
    if request.url.path == "/review/monitor":  # reads the monitoring run, not the scoring
        return None
    run = latest_run(settings.scores_dir())
    return None if run is None else (run.name, request.url.path, tuple(sorted(request.query_params.multi_items())))


class Answers:
    """The last pages and exports served, per scoring and query: a CX team reloading the
    list or downloading the CSV again costs a lookup, not the pandas work again, so the
    pages take little from /eta beside them. Bounded; a new scoring changes every key."""

    def __init__(self, size: int = 64):
        self.size, self._items = size, {}
        self._lock = threading.Lock()

    def get(self, key) -> Response | None:
        with self._lock:
            cached = self._items.pop(key, None)
            if cached is None:
                return None
            self._items[key] = cached  # most recently used last
        return Response(cached.body, status_code=cached.status_code, headers=dict(cached.headers))

    def put(self, key, response: Response) -> None:
        with self._lock:
            self._items[key] = response
            while len(self._items) > self.size:
                self._items.pop(next(iter(self._items)))


ANSWERS = Answers()


async def login(request: Request) -> Response:
    token = settings.review_token()
    if request.method == "GET" or token is None:
        return _login_page(request) if token else RedirectResponse("/review", status_code=303)
    client = request.client.host if request.client else "?"
    wait = ATTEMPTS.blocked(client)
    if wait:
        page = _page("message.html", 429, title="Too many attempts",
                     message=f"Too many wrong tokens from this address; try again in {math.ceil(wait)} s.")
        page.headers["retry-after"] = str(math.ceil(wait))
        return page
    form = await request.form()
    target = _safe_next(str(form.get("next") or "/review"))
    if not _same(str(form.get("csrf", "")), request.cookies.get(CSRF_COOKIE, "")) or not form.get("csrf"):
        return _login_page(request, "The form expired; sign in again.", target, status=403)
    if not _same(str(form.get("token", "")), token):
        ATTEMPTS.failed(client)
        return _login_page(request, "That token is not right.", target)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, new_session(token), max_age=int(settings.review_session_hours() * 3600), httponly=True,
                        samesite="strict", path="/review", secure=settings.cookie_secure())
    response.delete_cookie(CSRF_COOKIE, path="/review/login")
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
                    day = pd.Timestamp(value)
                except (ValueError, OverflowError, TypeError):
                    day = pd.NaT
                if pd.isna(day):
                    raise BadFilter(f"{name}: {value[:40]!r} is not a date (use YYYY-MM-DD)")
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
def at_risk(request: Request) -> Response:
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
def export_csv(request: Request) -> Response:
    scoring = STORE.get()
    if scoring is None:
        return PlainTextResponse("no scoring yet: run eddy score-customers", status_code=404)
    shown = Filters.from_query(request.query_params).apply(scoring.table).copy()
    shown["top_reasons"] = ["; ".join(words(r["feature"]) for r in actionable_first(list(rs))) for rs in shown.reasons]
    csv = spreadsheet_safe(shown.reindex(columns=EXPORT)).to_csv(index=False)
    return Response(csv, media_type="text/csv",
                    headers={"content-disposition": 'attachment; filename="eddy-at-risk.csv"'})


@guarded
def customer(request: Request) -> Response:
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
def drivers(request: Request) -> Response:
    scoring = STORE.get()
    if scoring is None:
        return _no_scoring()
    d = scoring.drivers
    bars = [{"label": words(i["feature"]) + (ACT if churn_actionable(i["feature"]) else ""), "value": i["mean_abs_shap"]}
            for i in d.get("importance", [])]
    plots = [{"feature": k, "title": words(k), "data": json.dumps(v)} for k, v in d.get("dependence", {}).items()]
    return _page("drivers.html", d=d, bars=json.dumps(bars), plots=plots)


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula (=, +, -, @, tab, return at the
    start) get a leading apostrophe; ids come from the retailer's data, not from us."""
    out = table.copy()
    for c in out.columns:
        if out[c].dtype == object or pd.api.types.is_string_dtype(out[c].dtype):
            text = out[c].astype("str")
            risky = text.str.match(r"^[=+\-@\t\r]", na=False)
            out[c] = text.where(~risky, "'" + text).where(out[c].notna(), None)
    return out


def _show(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "none"
    return f"{v:,.1f}" if isinstance(v, (int, float)) else str(v)


@guarded
def monitor(request: Request) -> Response:
    from serving.monitor_page import LATEST, page_context

    context = page_context()
    if context is None:
        why = f"The prediction log's database cannot be read: {LATEST.error}." if LATEST.error else \
            "No monitoring run yet: run 'eddy monitor DIR' on the latest export."
        return _page("message.html", 200, title="No live figures yet", message=why)
    return _page("monitor.html", **context)


ROUTES = [
    Route("/review", at_risk),
    Route("/review/monitor", monitor),
    Route("/review/export.csv", export_csv),
    Route("/review/drivers", drivers),
    Route("/review/customer/{key}", customer),
    Route("/review/login", login, methods=["GET", "POST"]),
    Mount("/review/static", StaticFiles(directory=HERE / "static"), name="review-static"),
]
