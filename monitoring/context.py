"""What the current log line is about: request id, tenant schema, user, job id."""

import contextvars
import logging

from django.utils.functional import empty

from monitoring.tracing import current_trace_id

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")
request_var: contextvars.ContextVar[object | None] = contextvars.ContextVar("request", default=None)


def _user(request) -> str:
    # Only report a user the request has already loaded: logging must never query the database.
    user = getattr(request, "user", None) if request is not None else None
    if user is None or getattr(user, "_wrapped", None) is empty:
        return ""
    return user.get_username() if getattr(user, "is_authenticated", False) else ""


def _job_id() -> str:
    try:
        from rq import get_current_job

        job = get_current_job()
    except Exception:
        return ""
    return job.id if job is not None else ""


def current_tenant() -> str:
    """The schema the current request or job works for ("" outside of one)."""
    explicit = tenant_var.get()
    if explicit:
        return explicit
    tenant = getattr(request_var.get(), "tenant", None)
    schema = getattr(tenant, "schema_name", "") or ""
    return "" if schema == "public" else schema


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.tenant = current_tenant()
        record.user = _user(request_var.get())
        record.job_id = _job_id()
        record.trace_id = current_trace_id()
        return True
