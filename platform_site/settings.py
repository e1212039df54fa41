"""The one settings file. Every value comes from the environment (see .env.example)."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-key" if DEBUG else environ.Env.NOTSET)

# Tenant hosts are <subdomain>.<PLATFORM_BASE_DOMAIN>; the control plane (admin) answers on
# PLATFORM_ADMIN_HOST, which is the public schema's domain.
PLATFORM_BASE_DOMAIN = env("PLATFORM_BASE_DOMAIN", default="localhost")
PLATFORM_ADMIN_HOST = env("PLATFORM_ADMIN_HOST", default=PLATFORM_BASE_DOMAIN)
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=[PLATFORM_ADMIN_HOST, f".{PLATFORM_BASE_DOMAIN}", "127.0.0.1"]
)
# How links to tenant hosts are written (owner set-password links, admin "view shop" links).
PLATFORM_PUBLIC_SCHEME = env("PLATFORM_PUBLIC_SCHEME", default="http" if DEBUG else "https")
PLATFORM_PUBLIC_PORT = env("PLATFORM_PUBLIC_PORT", default="")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

SHARED_APPS = [
    "django_tenants",
    "tenants",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "monitoring",
]
# Apps whose tables live in every tenant's schema: the shop's own data and its own users.
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "storefront",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]

MIDDLEWARE = [
    "monitoring.middleware.MonitoringMiddleware",
    "tenants.middleware.TenantRoutingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "platform_site.urls_tenants"
PUBLIC_SCHEMA_URLCONF = "platform_site.urls_public"
WSGI_APPLICATION = "platform_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL through our backend: django-tenants' schema switching, with the search_path sent
# in the same round trip as every query so it stays correct behind PgBouncer transaction pooling.
DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/platform")}
DATABASES["default"].update(
    ENGINE="platform_site.db",
    CONN_MAX_AGE=env.int("CONN_MAX_AGE", default=60),
    CONN_HEALTH_CHECKS=True,
    # Server-side cursors cannot survive transaction pooling (PgBouncer, RDS Proxy).
    DISABLE_SERVER_SIDE_CURSORS=True,
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env("CACHE_URL", default=REDIS_URL),
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="platform"),
    }
}

RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 300},
    # Slow work (migrations across schemas, backups, deployments) so it never delays provisioning.
    "long": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600},
}
RQ = {"WORKER_CLASS": env("RQ_WORKER_CLASS", default="monitoring.worker.MetricsWorker")}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
PASSWORD_RESET_TIMEOUT = env.int("OWNER_LINK_TIMEOUT_SECONDS", default=3 * 24 * 3600)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Tenancy
TENANT_SCHEMA_POOL_SIZE = env.int("TENANT_SCHEMA_POOL_SIZE", default=5)
TENANT_ROUTE_CACHE_SECONDS = env.int("TENANT_ROUTE_CACHE_SECONDS", default=300)
# How long a worker process trusts its in-memory copy of a host's route before asking the
# shared cache again; invalidation reaches other processes within this time.
TENANT_ROUTE_LOCAL_SECONDS = env.float("TENANT_ROUTE_LOCAL_SECONDS", default=5.0)
TENANT_MIGRATION_WORKERS = env.int("TENANT_MIGRATION_WORKERS", default=2)

# Security: production defaults whenever DEBUG is off.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Monitoring: health endpoints, metrics, structured logs, Sentry, uptime probes, alerts.
# /metrics is allowed for a bearer token (METRICS_TOKEN) or for clients in METRICS_ALLOWED_IPS.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1/32", "::1/128"])
# Request metrics carry a tenant label for at most this many tenants per process ("other" beyond);
# tenants listed in METRICS_TENANT_LABELS always get their own label. 0 turns tenant labels off.
METRICS_TENANT_LABEL_LIMIT = env.int("METRICS_TENANT_LABEL_LIMIT", default=50)
METRICS_TENANT_LABELS = env.list("METRICS_TENANT_LABELS", default=[])
# /readyz fails when fewer RQ workers than this are alive (0: do not check workers).
READYZ_MIN_WORKERS = env.int("READYZ_MIN_WORKERS", default=1)
HEALTH_CHECK_TIMEOUT_SECONDS = env.float("HEALTH_CHECK_TIMEOUT_SECONDS", default=2.0)
# "json": one JSON object a line (production); "text": readable lines (development).
LOG_FORMAT = env("LOG_FORMAT", default="text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise environ.ImproperlyConfigured(f"LOG_FORMAT must be 'json' or 'text', not {LOG_FORMAT!r}.")
LOGGING["filters"] = {"context": {"()": "monitoring.context.ContextFilter"}}
LOGGING["formatters"]["json"] = {"()": "monitoring.logs.JsonFormatter"}
LOGGING["formatters"]["text"] = {
    "()": "monitoring.logs.TextFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"
}
LOGGING["handlers"]["console"].update(formatter=LOG_FORMAT, filters=["context"])
SENTRY_DSN = env("SENTRY_DSN", default="")
SENTRY_RELEASE = env("SENTRY_RELEASE", default="")
SENTRY_ENVIRONMENT = env("SENTRY_ENVIRONMENT", default="development" if DEBUG else "production")
SENTRY_TRACES_SAMPLE_RATE = env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0)
# Uptime probes: every active shop's primary host and active custom domains, every
# PROBE_INTERVAL_SECONDS. PROBE_CONNECT_TO sends probes to a fixed address (the edge) per host,
# like curl --connect-to: "*=10.0.0.5:443" or "shop.example.com=127.0.0.1:8443,...".
PROBE_SCHEME = env("PROBE_SCHEME", default=PLATFORM_PUBLIC_SCHEME)
PROBE_PORT = env("PROBE_PORT", default=PLATFORM_PUBLIC_PORT)
PROBE_PATH = env("PROBE_PATH", default="/")
PROBE_CONNECT_TO = env.dict("PROBE_CONNECT_TO", default={})
PROBE_TIMEOUT_SECONDS = env.float("PROBE_TIMEOUT_SECONDS", default=5.0)
PROBE_CONCURRENCY = env.int("PROBE_CONCURRENCY", default=32)
PROBE_INTERVAL_SECONDS = env.int("PROBE_INTERVAL_SECONDS", default=60)
# Raw probe results are kept PROBE_RETENTION_DAYS; hourly counts (uptime %, charts) longer.
PROBE_RETENTION_DAYS = env.int("PROBE_RETENTION_DAYS", default=7)
PROBE_HOURLY_RETENTION_DAYS = env.int("PROBE_HOURLY_RETENTION_DAYS", default=35)
PROBE_VERIFY_TLS = env.bool("PROBE_VERIFY_TLS", default=True)
# Extra CA bundle to trust (a private or test CA); the system store otherwise.
PROBE_CA_FILE = env("PROBE_CA_FILE", default="")
# Alerts: rules evaluated every ALERT_EVALUATION_INTERVAL_SECONDS; each notification is tried
# ALERT_DELIVERY_ATTEMPTS times with exponential backoff (BACKOFF, 2x BACKOFF, ... up to MAX).
ALERT_EVALUATION_INTERVAL_SECONDS = env.int("ALERT_EVALUATION_INTERVAL_SECONDS", default=60)
ALERT_DELIVERY_ATTEMPTS = env.int("ALERT_DELIVERY_ATTEMPTS", default=5)
ALERT_DELIVERY_BACKOFF_SECONDS = env.float("ALERT_DELIVERY_BACKOFF_SECONDS", default=2.0)
ALERT_DELIVERY_BACKOFF_MAX_SECONDS = env.float("ALERT_DELIVERY_BACKOFF_MAX_SECONDS", default=60.0)
ALERT_DELIVERY_TIMEOUT_SECONDS = env.float("ALERT_DELIVERY_TIMEOUT_SECONDS", default=10.0)
ALERT_EMAIL_FROM = env("ALERT_EMAIL_FROM", default=f"alerts@{PLATFORM_BASE_DOMAIN}")
PAGERDUTY_EVENTS_URL = env("PAGERDUTY_EVENTS_URL", default="https://events.pagerduty.com/v2/enqueue")
# Links in notifications point here (the admin host).
_admin_port = f":{PLATFORM_PUBLIC_PORT}" if PLATFORM_PUBLIC_PORT else ""
PLATFORM_ADMIN_URL = env("PLATFORM_ADMIN_URL", default=f"{PLATFORM_PUBLIC_SCHEME}://{PLATFORM_ADMIN_HOST}{_admin_port}")
# Channel secrets are encrypted under a key derived from this (SECRET_KEY when empty).
MONITORING_SECRETS_KEY = env("MONITORING_SECRETS_KEY", default="")
# Fact sources for the backup, drill, deployment and certificate rules (dotted paths to functions,
# see monitoring/sources.py); a rule whose source is empty reports "not available yet".
MONITORING_SOURCES = {
    "certificates": env("MONITORING_CERTIFICATES_SOURCE", default=""),
    "backups": env("MONITORING_BACKUPS_SOURCE", default=""),
    "drills": env("MONITORING_DRILLS_SOURCE", default=""),
    "deployments": env("MONITORING_DEPLOYMENTS_SOURCE", default=""),
}
