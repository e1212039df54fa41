"""Guards for /api/: request size (413) and media type (415) before any view runs, and every
error answer in the one problem+json shape, whoever produced it (Django's 404/405/500 too)."""

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.http.request import RawPostDataException

from api.problems import CONTENT_TYPE, problem
from api.services import READ_METHODS, apikey_read_record

BODY_METHODS = ("POST", "PUT", "PATCH")


class ApiMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith("/api/"):
            return self.get_response(request)
        refused = self.refuse(request)
        if refused is not None:
            return refused
        response = self.get_response(request)
        response = self.as_problem(request, response)
        key = getattr(request, "api_key", None)  # set once a key authenticated (api.apis)
        if key is not None and request.method in READ_METHODS and not getattr(request, "api_audited", False):
            apikey_read_record(key=key, method=request.method, path=request.path, status=response.status_code)
        return response

    def as_problem(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith(CONTENT_TYPE):
            allow = response.get("Allow")
            detail = {
                404: f"No API endpoint at {request.path}; see the schema at /api/schema/.",
                405: f"{request.method} is not allowed here; use {allow or 'another method'}.",
                503: "This shop is temporarily unavailable (suspended, or being changed); retry later.",
            }.get(response.status_code, "The request could not be served; see docs/api.md.")
            converted = problem(request, response.status_code, detail)
            if allow:
                converted["Allow"] = allow
            return converted
        return response

    def refuse(self, request: HttpRequest) -> HttpResponse | None:
        limit = settings.API_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return problem(request, 400, "Content-Length is not a number.")
        too_big = problem(request, 413, f"The request body is over {limit} bytes; send less.",
                          slug="too-large")
        if length > limit:
            return too_big
        if request.method not in BODY_METHODS:
            return None
        if not length and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            try:
                if len(request.body) > limit:
                    return too_big
            except (RequestDataTooBig, RawPostDataException):
                return too_big
            length = len(request.body)
        media = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if length and media != "application/json":
            return problem(request, 415, f"Send the body as application/json (got {media or 'no type'}).",
                           slug="unsupported-media-type")
        return None
