"""The staff page: today's list, status buttons, demographic corrections, refresh.

Server-rendered HTML (Jinja2, no JavaScript), behind HTTP Basic authentication; every
form carries a CSRF token bound to the signed-in user, and responses forbid framing
and caching (they show patient details).
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from trailerlink_worklist import metrics
from trailerlink_worklist.auth import CsrfTokens, StaffAuth
from trailerlink_worklist.cache import CachedStep
from trailerlink_worklist.corrections import SEXES, validate
from trailerlink_worklist.model import StepStatus
from trailerlink_worklist.upstream import LinkStatus
from trailerlink_worklist.worklist import NotFound, Worklist

log = logging.getLogger(__name__)

_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with
    # every form, and the Origin check below refused them all (found by the Chromium
    # tests); same-origin still sends no URL to any other site.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# Status buttons staff may press, by current status.
_ACTIONS = {
    StepStatus.BOOKED: [
        (StepStatus.ARRIVED, "Arrived"),
        (StepStatus.DID_NOT_ATTEND, "Did not attend"),
    ],
    StepStatus.ARRIVED: [
        (StepStatus.BOOKED, "Undo arrived"),
        (StepStatus.DID_NOT_ATTEND, "Did not attend"),
    ],
    StepStatus.DID_NOT_ATTEND: [(StepStatus.BOOKED, "Undo did not attend")],
}
_STAFF_SETTABLE = {StepStatus.BOOKED, StepStatus.ARRIVED, StepStatus.DID_NOT_ATTEND}


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DAYS_SHOWN = 7  # today and the next six days (within the horizon)


def _parse(value: str) -> date | None:
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8])) if len(value) == 8 else None
    except ValueError:
        return None


def uk_date(value: str) -> str:
    """``19590312`` as UK staff read it: ``12 Mar 1959`` (unparseable: as given)."""
    day = _parse(value)
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}" if day else value


def age(birth: str, today: date) -> int | None:
    born = _parse(birth)
    if born is None or born > today:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def nhs_number(value: str) -> str:
    """A 10-digit NHS number in the 3-3-4 groups staff read: ``999 054 9206``."""
    return (
        f"{value[:3]} {value[3:6]} {value[6:]}" if len(value) == 10 and value.isdigit() else value
    )


def _time(value: str) -> str:
    return f"{value[:2]}:{value[2:4]}" if len(value) >= 4 else value


def display_name(value: str) -> str:
    """``FAMILY^Given`` as ``FAMILY, Given``, NFC-normalised. A given name the source sent
    all in capitals is shown in title case (``SIÂN`` -> ``Siân``); one it sent in mixed
    case is shown exactly as sent (``McCarthy``, ``ap Dafydd``, ``Siân``): title-casing
    those breaks them. The family name is always shown as sent."""
    value = unicodedata.normalize("NFC", value.split("=")[0])
    family, _, rest = value.partition("^")
    given = rest.split("^")[0]
    if given.isupper():
        given = given.title()
    return f"{family}, {given}" if given else family


def _view(cached: CachedStep, today: date) -> dict[str, Any]:
    s = cached.step
    years = age(s.patient_birth_date, today)
    return {
        "key_url": urllib.parse.quote(s.key, safe=""),
        "time": _time(s.scheduled_time),
        "name": display_name(s.patient_name),
        "patient_id": nhs_number(s.patient_id),
        "birth_date": uk_date(s.patient_birth_date),
        "age": years,
        "accession": s.accession_number,
        "status": cached.status.label,
        "actions": [(v.value, label) for v, label in _ACTIONS.get(cached.status, [])],
    }


REFRESH_SECONDS = 60  # the list reloads itself; it has no field to lose


def _weekday(day: date) -> str:
    return (
        f"{('Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun')[day.weekday()]} {day.day} "
        f"{_MONTHS[day.month - 1]}"
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{int(seconds)} seconds ago"
    if seconds < 5400:
        return f"{int(seconds // 60)} minutes ago"
    return f"{seconds / 3600:.1f} hours ago"


class StaffPage:
    """Adds the staff routes to the service's FastAPI app."""

    def __init__(
        self,
        worklist: Worklist,
        auth: StaffAuth,
        csrf: CsrfTokens,
        link: LinkStatus | None,
        refresh: Callable[[], None],
        trailer_id: str,
        site_code: str,
    ) -> None:
        self.worklist = worklist
        self.auth = auth
        self.csrf = csrf
        self.link = link
        self.refresh = refresh
        self.trailer_id = trailer_id
        self.site_code = site_code

    def install(self, app: FastAPI) -> None:
        app.add_api_route("/", self.day, methods=["GET"], include_in_schema=False)
        app.add_api_route("/sign-out", self.sign_out, methods=["POST"], include_in_schema=False)
        app.add_api_route("/refresh", self.post_refresh, methods=["POST"], include_in_schema=False)
        app.add_api_route(
            "/steps/{key}/correct", self.correct_form, methods=["GET"], include_in_schema=False
        )
        app.add_api_route(
            "/steps/{key}/correct", self.correct_submit, methods=["POST"], include_in_schema=False
        )
        app.add_api_route(
            "/steps/{key}/status", self.post_status, methods=["POST"], include_in_schema=False
        )

    # --- guards ----------------------------------------------------------------------
    def _user(self, request: Request) -> str:
        if not self.auth.configured:
            raise _Refused(
                self._plain(
                    503,
                    "The staff page has no users configured (TRAILERLINK_STAFF_CREDENTIALS_FILE).",
                )
            )
        user = self.auth.check(request.headers.get("authorization"))
        if user is None:
            response = self._plain(401, "Sign in with your trailer staff account.")
            response.headers["WWW-Authenticate"] = 'Basic realm="trailer worklist", charset="UTF-8"'
            raise _Refused(response)
        return user

    async def _form(self, request: Request, user: str, action: str) -> dict[str, str]:
        origin = request.headers.get("origin")
        if origin and urllib.parse.urlsplit(origin).netloc != request.headers.get("host"):
            metrics.STAFF_ACTIONS.labels(action, "csrf_refused").inc()
            raise _Refused(self._plain(403, "Form sent from another site."))
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not self.csrf.valid(user, form.get("csrf_token", "")):
            metrics.STAFF_ACTIONS.labels(action, "csrf_refused").inc()
            raise _Refused(
                self._plain(403, "This form has expired. Go back, reload the page and try again.")
            )
        return form

    @staticmethod
    def _plain(status: int, text: str) -> HTMLResponse:
        body = (
            f'<!DOCTYPE html><html lang="en-GB"><head><meta charset="utf-8">'
            f"<title>Trailer worklist</title></head><body><main><p>{text}</p>"
            f"</main></body></html>"
        )
        return HTMLResponse(body, status_code=status, headers=_SECURITY_HEADERS)

    def _render(self, template: str, user: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = _TEMPLATES.get_template(template).render(
            user=user, trailer_id=self.trailer_id, csrf_token=self.csrf.issue(user), **context
        )
        return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)

    async def _guarded(self, handler: Callable[[], Awaitable[Response]]) -> Response:
        try:
            return await handler()
        except _Refused as refused:
            return refused.response

    # --- pages -------------------------------------------------------------------------
    async def day(self, request: Request, message: str = "", day: str = "") -> Response:
        async def page() -> Response:
            user = self._user(request)
            today = self.worklist.clock.today()
            days = [
                today + timedelta(days=n)
                for n in range(min(DAYS_SHOWN, self.worklist.horizon_days + 1))
            ]
            shown = next((d for d in days if d.isoformat() == day), today)
            steps = await asyncio.to_thread(self.worklist.cache.steps, shown.strftime("%Y%m%d"))
            last = self.worklist.last_sync()
            title = "Today's list" if shown == today else f"List for {_weekday(shown)}"
            return self._render(
                "day.html",
                user,
                title=title,
                steps=[_view(c, today) for c in steps],
                today=uk_date(shown.strftime("%Y%m%d")),
                is_today=shown == today,
                days=[
                    {
                        "iso": d.isoformat(),
                        "label": "Today" if d == today else _weekday(d),
                        "current": d == shown,
                    }
                    for d in days
                ],
                shown_iso=shown.isoformat(),
                refresh_seconds=REFRESH_SECONDS,
                site_code=self.site_code,
                link_up=self.link.up if self.link else None,
                cache_age=_age(None if last is None else time.time() - last),
                message=message[:200],
            )

        return await self._guarded(page)

    async def sign_out(self, request: Request) -> Response:
        """HTTP Basic has no session to end: answer 401 for the realm, which makes the
        browser forget the credentials it kept, and say to close the tab."""

        async def act() -> Response:
            user = self._user(request)
            await self._form(request, user, "sign_out")
            metrics.STAFF_ACTIONS.labels("sign_out", "ok").inc()
            log.info("staff signed out", extra={"by": user})
            response = self._plain(
                401,
                "You are signed out. Close this tab; the next person "
                'signs in with their own account. <a href="/">Sign '
                "in again</a>",
            )
            response.headers["WWW-Authenticate"] = 'Basic realm="trailer worklist", charset="UTF-8"'
            return response

        return await self._guarded(act)

    async def post_refresh(self, request: Request) -> Response:
        async def act() -> Response:
            user = self._user(request)
            await self._form(request, user, "refresh")
            self.refresh()
            metrics.STAFF_ACTIONS.labels("refresh", "ok").inc()
            return RedirectResponse(
                "/?message=Refresh+requested", status_code=303, headers=_SECURITY_HEADERS
            )

        return await self._guarded(act)

    async def post_status(self, request: Request, key: str) -> Response:
        async def act() -> Response:
            user = self._user(request)
            form = await self._form(request, user, "status")
            try:
                status = StepStatus(form.get("status", ""))
            except ValueError:
                status = None
            if status not in _STAFF_SETTABLE:
                metrics.STAFF_ACTIONS.labels("status", "invalid").inc()
                return self._plain(400, "That status cannot be set here.")
            try:
                await asyncio.to_thread(self.worklist.set_status, key, status)
            except NotFound:
                return self._plain(404, "That appointment is no longer on the list.")
            metrics.STAFF_ACTIONS.labels("status", "ok").inc()
            log.info("status set by staff", extra={"status": status.value, "by": user})
            return RedirectResponse("/", status_code=303, headers=_SECURITY_HEADERS)

        return await self._guarded(act)

    async def correct_form(self, request: Request, key: str) -> Response:
        async def page() -> Response:
            user = self._user(request)
            cached = self.worklist.cache.get_step(key)
            if cached is None:
                return self._plain(404, "That appointment is no longer on the list.")
            return self._render(
                "correct.html",
                user,
                title="Correct details",
                step=_view(cached, self.worklist.clock.today()),
                form={},
                errors={},
                sexes=SEXES,
            )

        return await self._guarded(page)

    async def correct_submit(self, request: Request, key: str) -> Response:
        async def act() -> Response:
            user = self._user(request)
            form = await self._form(request, user, "correction")
            cached = self.worklist.cache.get_step(key)
            if cached is None:
                return self._plain(404, "That appointment is no longer on the list.")
            correction, errors = validate(form, self.worklist.clock.today())
            if correction is None:
                metrics.STAFF_ACTIONS.labels("correction", "invalid").inc()
                shown = {k: v for k, v in form.items() if k != "csrf_token"}
                return self._render(
                    "correct.html",
                    user,
                    status=422,
                    title="Error: correct details",
                    step=_view(cached, self.worklist.clock.today()),
                    form=shown,
                    errors=errors,
                    sexes=SEXES,
                )
            try:
                event = await asyncio.to_thread(self.worklist.correct, key, correction, user)
            except NotFound:
                return self._plain(404, "That appointment is no longer on the list.")
            metrics.STAFF_ACTIONS.labels("correction", "ok").inc()
            log.info(
                "correction queued for upstream",
                extra={"correction_id": event.correction_id, "by": user},
            )
            return RedirectResponse(
                "/?message=Correction+saved+and+queued+for+NBSS",
                status_code=303,
                headers=_SECURITY_HEADERS,
            )

        return await self._guarded(act)
