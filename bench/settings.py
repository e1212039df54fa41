"""Settings for the benchmarks: the project's own, with what a benchmark swaps chosen by env vars.

BENCH_STACK picks the request stack that bench_routing.py compares:
  ours   - platform_site.db + tenants.middleware.TenantRoutingMiddleware (the project as shipped)
  stock  - django_tenants.postgresql_backend + django-tenants' TenantMainMiddleware
  plain  - stock Django, no tenancy: the same storefront view over a plain table in public
BENCH_COUNT_QUERIES=1 puts bench.middleware.QueryCountMiddleware first (never in timed runs).
BENCH_MIGRATION_MODULE points the storefront app at a generated migrations package
(bench_provision.py's "30 extra no-op migrations" phase).
"""

import os

from platform_site.settings import *  # noqa: F403
from platform_site.settings import DATABASES, MIDDLEWARE

BENCH_STACK = os.environ.get("BENCH_STACK", "ours")
if BENCH_STACK not in ("ours", "stock", "plain"):
    raise ValueError(f"BENCH_STACK must be ours, stock or plain, not {BENCH_STACK!r}")

_tenant_middleware = "tenants.middleware.TenantRoutingMiddleware"

if BENCH_STACK == "stock":
    DATABASES["default"]["ENGINE"] = "django_tenants.postgresql_backend"
    MIDDLEWARE = [
        "django_tenants.middleware.main.TenantMainMiddleware" if m == _tenant_middleware else m
        for m in MIDDLEWARE
    ]
elif BENCH_STACK == "plain":
    DATABASES["default"]["ENGINE"] = "django.db.backends.postgresql"
    # Stock Django: no tenancy, and none of the project's login hardening (its apps are not installed).
    MIDDLEWARE = [
        m for m in MIDDLEWARE
        if m != _tenant_middleware and not m.startswith(("axes.", "django_otp.", "core.", "api."))
    ]
    AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
    INSTALLED_APPS = [
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
        "storefront",
    ]
    DATABASE_ROUTERS = []
    ROOT_URLCONF = "bench.urls_plain"

if os.environ.get("BENCH_COUNT_QUERIES") == "1":
    MIDDLEWARE = ["bench.middleware.QueryCountMiddleware", *MIDDLEWARE]

if os.environ.get("BENCH_MIGRATION_MODULE"):
    MIGRATION_MODULES = {"storefront": os.environ["BENCH_MIGRATION_MODULE"]}
