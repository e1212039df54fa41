"""The one settings file. Every value comes from the environment (see .env.example).

Django's own settings first, then one banner per app, in the order of .env.example.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# === Django and the platform's servers ===
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
    # First, so that its migrate_schemas (tenants/management/commands) replaces django-tenants'
    # one: Django takes a command from the first app that has it. Nothing else depends on this
    # order (django_tenants still comes before django.contrib.admin for its admin templates).
    "tenants",
    "core",
    "django_tenants",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Login security (core/login.py): failed-login counts and staff TOTP devices, public schema only,
    # so one store counts attempts for the admin and every shop.
    "core.library_apps.LoginLockoutsConfig",  # django-axes
    "django_otp",
    "core.library_apps.TwoFactorDevicesConfig",  # django-otp's TOTP devices
    "core.library_apps.JobQueuesConfig",  # django-rq
    "backups",
    "deployments",
    "monitoring",
    "webhooks",
    "api",  # the public API (docs/api.md); built on all of the above, none of them imports it
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
    # First: X-Forwarded-Proto (SECURE_PROXY_SSL_HEADER) is dropped unless a trusted proxy sent it.
    "core.clientip.ProxyHeadersMiddleware",
    "monitoring.middleware.MonitoringMiddleware",
    # /api/ only: size and media-type limits before routing, every error (routing's too) a problem.
    "api.middleware.ApiMiddleware",
    "tenants.middleware.TenantRoutingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "core.two_factor.AdminOTPMiddleware",  # django-otp's, on the admin host only
    "django.contrib.messages.middleware.MessageMiddleware",
    "core.two_factor.StaffTwoFactorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as axes requires: turns a refused login into the lockout page (core.login.lockout_response).
    "axes.middleware.AxesMiddleware",
]
# The throttle first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "core.login.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
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
    # Backups and exports, worked by backups.worker.BackupWorker (no fork per job; docs/backups.md);
    # its timeout is BACKUP_JOB_TIMEOUT_SECONDS, below.
    "backups": {"URL": REDIS_URL},
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

# A logging.config.dictConfig() dict; the monitoring section below adds to it.
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# === Platform-wide (core/): encryption at rest ===
# Fernet keys (comma separated, newest first) that encrypt ACME and certificate keys at rest.
# Generate one: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
PLATFORM_ENCRYPTION_KEYS = env.list("PLATFORM_ENCRYPTION_KEYS", default=[])
if DEBUG and not PLATFORM_ENCRYPTION_KEYS:
    # Development only: a key derived from SECRET_KEY, so a fresh checkout just works.
    import base64
    import hashlib

    _derived = hashlib.sha256(SECRET_KEY.encode()).digest()
    PLATFORM_ENCRYPTION_KEYS = [base64.urlsafe_b64encode(_derived).decode()]
# Proxies (CIDRs) whose X-Forwarded-For and X-Forwarded-Proto are believed (core/clientip.py): the
# edge's address, a load balancer's subnet. Loopback by default (an edge beside the app); empty: the
# connecting address is the client and every request's scheme is its own.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=["127.0.0.1/32", "::1/128"])

# === Login security (core/login.py, core/two_factor.py): throttling, staff two-factor ===
# Failed logins (wrong password or wrong two-factor code) before sign-in is paused, and for how
# long. Counted per host's realm (the admin, each shop) and username, and per client address
# unless LOGIN_LOCKOUT_BY=user (then anyone can pause an account, but spread-out guessing stops).
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", default=15)
LOGIN_LOCKOUT_BY = env("LOGIN_LOCKOUT_BY", default="user_and_ip")
if LOGIN_LOCKOUT_BY not in ("user_and_ip", "user"):
    raise environ.ImproperlyConfigured(
        f"LOGIN_LOCKOUT_BY must be 'user_and_ip' or 'user', not {LOGIN_LOCKOUT_BY!r}."
    )
if LOGIN_FAILURE_LIMIT < 1 or LOGIN_LOCKOUT_MINUTES < 1:
    raise environ.ImproperlyConfigured("LOGIN_FAILURE_LIMIT and LOGIN_LOCKOUT_MINUTES must be at least 1.")
# Who a locked-out user should contact (an address or URL), shown on the lockout page.
LOGIN_SUPPORT_CONTACT = env("LOGIN_SUPPORT_CONTACT", default="")
# Superusers and "Platform operators" must enroll a TOTP device before using the admin.
STAFF_REQUIRE_2FA = env.bool("STAFF_REQUIRE_2FA", default=False)
# The name authenticator apps show next to the code.
OTP_TOTP_ISSUER = env("STAFF_2FA_ISSUER", default="Platform admin")
# django-axes, configured from the settings above.
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS: list[Any] = (
    [["username", "ip_address"]] if LOGIN_LOCKOUT_BY == "user_and_ip" else ["username"]
)
AXES_USERNAME_CALLABLE = "core.login.lockout_username"  # "<schema>/<username>"
AXES_CLIENT_IP_CALLABLE = "core.login.client_ip"
AXES_LOCKOUT_CALLABLE = "core.login.lockout_response"
AXES_RESET_ON_SUCCESS = True
# The audit trail records logins; axes' own access log would only repeat it.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False
# Never keep a two-factor code in axes' record of the failed form (passwords are masked by axes).
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "otp_token"]
# core.login.LoginAttemptAdmin replaces axes' admin (no raw form data; unlocking is audited).
AXES_ENABLE_ADMIN = False
# django-otp: throttle wrong codes (1, 2, 4 ... s); the device admin never shows a secret.
OTP_TOTP_THROTTLE_FACTOR = 1
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
# axes narrates every login at INFO; its lockout warnings are the part worth keeping.
LOGGING["loggers"]["axes"] = {"level": "WARNING"}

# === Platform-wide (core/): outbound fetches (core/outbound.py, docs/security.md) ===
# Every fetch of a URL or name a tenant or a channel controls: one total deadline, a byte cap,
# redirects (GET only) re-checked hop by hop. Loopback, link-local (cloud metadata), private,
# CGNAT, multicast and reserved addresses are refused unless listed in OUTBOUND_ALLOWED_NETWORKS
# (CIDRs; for tests, demos and private deployments whose shops live on internal addresses).
OUTBOUND_TIMEOUT_SECONDS = env.float("OUTBOUND_TIMEOUT_SECONDS", default=10.0)
OUTBOUND_MAX_BYTES = env.int("OUTBOUND_MAX_BYTES", default=1024 * 1024)
OUTBOUND_MAX_REDIRECTS = env.int("OUTBOUND_MAX_REDIRECTS", default=3)
OUTBOUND_ALLOWED_NETWORKS = env.list("OUTBOUND_ALLOWED_NETWORKS", default=[])

# === Tenancy (tenants/) ===
TENANT_SCHEMA_POOL_SIZE = env.int("TENANT_SCHEMA_POOL_SIZE", default=5)
# Spares are built by replaying the SQL captured from a migrated schema (off: migrate each one),
# this many per transaction.
TENANT_SCHEMA_POOL_REPLAY = env.bool("TENANT_SCHEMA_POOL_REPLAY", default=True)
TENANT_SCHEMA_POOL_REFILL_BATCH = env.int("TENANT_SCHEMA_POOL_REFILL_BATCH", default=5)
TENANT_ROUTE_CACHE_SECONDS = env.int("TENANT_ROUTE_CACHE_SECONDS", default=300)
# How long a worker process trusts its in-memory copy of a host's route before asking the
# shared cache again; invalidation reaches other processes within this time.
TENANT_ROUTE_LOCAL_SECONDS = env.float("TENANT_ROUTE_LOCAL_SECONDS", default=5.0)
TENANT_MIGRATION_WORKERS = env.int("TENANT_MIGRATION_WORKERS", default=2)

# === Custom domains (tenants/domains/): verification, ACME certificates, the nginx edge ===
CUSTOM_DOMAIN_VERIFY_PREFIX = env("CUSTOM_DOMAIN_VERIFY_PREFIX", default="_platform-verify")
# "ip" or "ip:port"; empty uses the machine's resolv.conf.
CUSTOM_DOMAIN_DNS_NAMESERVERS = env.list("CUSTOM_DOMAIN_DNS_NAMESERVERS", default=[])
CUSTOM_DOMAIN_DNS_TIMEOUT = env.float("CUSTOM_DOMAIN_DNS_TIMEOUT", default=3.0)
# Where tenants point their domains: a CNAME to this name (default: the shop's own platform
# host), or A/AAAA records to the edge's addresses (needed for apex domains).
CUSTOM_DOMAIN_CNAME_TARGET = env("CUSTOM_DOMAIN_CNAME_TARGET", default="")
CUSTOM_DOMAIN_EDGE_IPV4 = env.list("CUSTOM_DOMAIN_EDGE_IPV4", default=["127.0.0.1"] if DEBUG else [])
CUSTOM_DOMAIN_EDGE_IPV6 = env.list("CUSTOM_DOMAIN_EDGE_IPV6", default=[])
# Port the HTTP-token check connects to on the domain's current server (80; a private port in tests).
CUSTOM_DOMAIN_HTTP_CHECK_PORT = env.int("CUSTOM_DOMAIN_HTTP_CHECK_PORT", default=80)
# CA identities a CAA record must allow (Let's Encrypt, which Pebble stands in for).
CUSTOM_DOMAIN_CAA_IDENTITIES = env.list("CUSTOM_DOMAIN_CAA_IDENTITIES", default=["letsencrypt.org"])
CUSTOM_DOMAIN_PENDING_EXPIRY_DAYS = env.int("CUSTOM_DOMAIN_PENDING_EXPIRY_DAYS", default=7)
CUSTOM_DOMAIN_MOVED_GRACE_DAYS = env.int("CUSTOM_DOMAIN_MOVED_GRACE_DAYS", default=7)
CUSTOM_DOMAIN_RECHECK_ACTIVE_MINUTES = env.int("CUSTOM_DOMAIN_RECHECK_ACTIVE_MINUTES", default=360)
CUSTOM_DOMAIN_CHECK_CONCURRENCY = env.int("CUSTOM_DOMAIN_CHECK_CONCURRENCY", default=32)
# "Check now" (a queued job): at most one per domain per CHECK_NOW_SECONDS, and at most
# CHECK_NOW_PER_MINUTE per shop per minute (counted in Redis).
CUSTOM_DOMAIN_CHECK_NOW_SECONDS = env.int("CUSTOM_DOMAIN_CHECK_NOW_SECONDS", default=30)
CUSTOM_DOMAIN_CHECK_NOW_PER_MINUTE = env.int("CUSTOM_DOMAIN_CHECK_NOW_PER_MINUTE", default=6)
# One deadline for the whole CAA walk up the name's labels (seconds; see dns_checks.CAA_MAX_LABELS).
CUSTOM_DOMAIN_CAA_TIMEOUT_SECONDS = env.float("CUSTOM_DOMAIN_CAA_TIMEOUT_SECONDS", default=10.0)
# ACME: Pebble in development; Let's Encrypt otherwise (staging:
# https://acme-staging-v02.api.letsencrypt.org/directory).
ACME_DIRECTORY_URL = env(
    "ACME_DIRECTORY_URL",
    default="https://127.0.0.1:14000/dir" if DEBUG else "https://acme-v02.api.letsencrypt.org/directory",
)
# CA bundle that verifies the ACME server's own TLS (Pebble's test certificate); empty = system CAs.
ACME_CA_BUNDLE = env("ACME_CA_BUNDLE", default="")
ACME_CONTACT_EMAIL = env("ACME_CONTACT_EMAIL", default="")
ACME_RENEW_DAYS = env.int("ACME_RENEW_DAYS", default=30)
ACME_TIMEOUT_SECONDS = env.int("ACME_TIMEOUT_SECONDS", default=90)
# The platform wildcard certificate (*.PLATFORM_BASE_DOMAIN and the base itself) by ACME DNS-01:
# the DNS provider that sets the _acme-challenge TXT records ("route53", "challtestsrv" for tests
# and development, or a dotted path to a class; empty: not issued). docs/custom-domains.md.
PLATFORM_CERT_DNS_PROVIDER = env("PLATFORM_CERT_DNS_PROVIDER", default="")
# route53: the hosted zone holding PLATFORM_BASE_DOMAIN; challtestsrv: its management API URL.
PLATFORM_CERT_ROUTE53_ZONE_ID = env("PLATFORM_CERT_ROUTE53_ZONE_ID", default="")
PLATFORM_CERT_CHALLTESTSRV_URL = env("PLATFORM_CERT_CHALLTESTSRV_URL", default="http://127.0.0.1:8055")
# Nameservers ("ip" or "ip:port") that must show the TXT record before the CA is asked (the
# zone's authoritative servers); empty: trust the provider's own "in sync". Bounded by the seconds.
PLATFORM_CERT_DNS_CHECK_NAMESERVERS = env.list("PLATFORM_CERT_DNS_CHECK_NAMESERVERS", default=[])
PLATFORM_CERT_PROPAGATION_SECONDS = env.int("PLATFORM_CERT_PROPAGATION_SECONDS", default=180)
# nginx edge: the folder holding nginx.conf, certs/ and the last good config.
EDGE_DIR = env.path("EDGE_DIR", default=BASE_DIR / ".local" / "edge")
EDGE_NGINX_BIN = env("EDGE_NGINX_BIN", default="nginx")
# Empty: `nginx -p EDGE_DIR -c EDGE_DIR/nginx.conf -s reload`; otherwise this command (shell words).
EDGE_RELOAD_COMMAND = env("EDGE_RELOAD_COMMAND", default="")
EDGE_UPSTREAM = env("EDGE_UPSTREAM", default="127.0.0.1:8000")
# The control plane as compose targets' edges reach it (host:port), for HTTP-01 answers; empty: EDGE_UPSTREAM.
EDGE_ACME_UPSTREAM = env("EDGE_ACME_UPSTREAM", default="")
EDGE_LISTEN_ADDRESS = env("EDGE_LISTEN_ADDRESS", default="")
EDGE_HTTP_PORT = env.int("EDGE_HTTP_PORT", default=80)
EDGE_HTTPS_PORT = env.int("EDGE_HTTPS_PORT", default=443)
# "per_domain": one server block per domain, certificates loaded by the master at each reload
# (keys stay root-only); "shared": one block, certificates loaded by SNI at the handshake (flat
# reload time and memory for thousands of domains; keys readable by EDGE_KEY_GROUP).
EDGE_TLS_MODE = env("EDGE_TLS_MODE", default="per_domain")
EDGE_KEY_GROUP = env("EDGE_KEY_GROUP", default="nogroup")
# Certificate for the platform's own hosts (*.PLATFORM_BASE_DOMAIN); empty: they are served on HTTP.
EDGE_PLATFORM_CERT = env("EDGE_PLATFORM_CERT", default="")
EDGE_PLATFORM_KEY = env("EDGE_PLATFORM_KEY", default="")
# /internal/tls/ask (on-demand TLS edges) answers only these: a request carrying
# X-Edge-Ask-Secret: EDGE_ASK_SECRET, or a client address in EDGE_ASK_ALLOWED_IPS or TRUSTED_PROXIES.
EDGE_ASK_SECRET = env("EDGE_ASK_SECRET", default="")
EDGE_ASK_ALLOWED_IPS = env.list("EDGE_ASK_ALLOWED_IPS", default=["127.0.0.1/32", "::1/128"] if DEBUG else [])

# === Backups (backups/, docs/backups.md) ===
# The store is a local folder unless BACKUP_STORAGE=s3.
BACKUP_STORAGE = env("BACKUP_STORAGE", default="local")
BACKUP_LOCAL_DIR = env.path("BACKUP_LOCAL_DIR", default=BASE_DIR / ".local" / "backups")
BACKUP_S3_BUCKET = env("BACKUP_S3_BUCKET", default="")
BACKUP_S3_PREFIX = env("BACKUP_S3_PREFIX", default="backups")
BACKUP_S3_ENDPOINT_URL = env("BACKUP_S3_ENDPOINT_URL", default="")
BACKUP_S3_REGION = env("BACKUP_S3_REGION", default="")
BACKUP_S3_ACCESS_KEY_ID = env("BACKUP_S3_ACCESS_KEY_ID", default="")
BACKUP_S3_SECRET_ACCESS_KEY = env("BACKUP_S3_SECRET_ACCESS_KEY", default="")
BACKUP_S3_SSE = env("BACKUP_S3_SSE", default="")
BACKUP_S3_SSE_KMS_KEY_ID = env("BACKUP_S3_SSE_KMS_KEY_ID", default="")
# Bytes per multipart part: the most a backup holds in memory (S3 needs at least 5 MiB).
BACKUP_S3_PART_SIZE = env.int("BACKUP_S3_PART_SIZE", default=8 * 1024 * 1024)
BACKUP_S3_MAX_ATTEMPTS = env.int("BACKUP_S3_MAX_ATTEMPTS", default=3)
# --- Off-site copies (backups/services/offsite.py): a second S3-compatible store in another region.
# Empty bucket: off. Every verified dump and export is copied there, checked by reading it back.
BACKUP_OFFSITE_S3_BUCKET = env("BACKUP_OFFSITE_S3_BUCKET", default="")
BACKUP_OFFSITE_S3_PREFIX = env("BACKUP_OFFSITE_S3_PREFIX", default="backups")
BACKUP_OFFSITE_S3_ENDPOINT_URL = env("BACKUP_OFFSITE_S3_ENDPOINT_URL", default="")
BACKUP_OFFSITE_S3_REGION = env("BACKUP_OFFSITE_S3_REGION", default="")
BACKUP_OFFSITE_S3_ACCESS_KEY_ID = env("BACKUP_OFFSITE_S3_ACCESS_KEY_ID", default="")
BACKUP_OFFSITE_S3_SECRET_ACCESS_KEY = env("BACKUP_OFFSITE_S3_SECRET_ACCESS_KEY", default="")
BACKUP_OFFSITE_S3_SSE = env("BACKUP_OFFSITE_S3_SSE", default="")
BACKUP_OFFSITE_S3_SSE_KMS_KEY_ID = env("BACKUP_OFFSITE_S3_SSE_KMS_KEY_ID", default="")
# Off-site retention: the newest copy of each of the last N days / weeks / months per shop.
BACKUP_OFFSITE_KEEP_DAILY = env.int("BACKUP_OFFSITE_KEEP_DAILY", default=14)
BACKUP_OFFSITE_KEEP_WEEKLY = env.int("BACKUP_OFFSITE_KEEP_WEEKLY", default=8)
BACKUP_OFFSITE_KEEP_MONTHLY = env.int("BACKUP_OFFSITE_KEEP_MONTHLY", default=12)
# ---
# A direct (not pooled) connection for pg_dump/pg_restore; defaults to DATABASE_URL.
BACKUP_DATABASE_URL = env("BACKUP_DATABASE_URL", default="")
# Folder holding pg_dump/pg_restore; empty = /usr/lib/postgresql/<server major>/bin, then PATH.
BACKUP_PG_BIN_DIR = env("BACKUP_PG_BIN_DIR", default="")
# Retention (per tenant): keep the newest backup of each of the last N hours/days/weeks/months.
# The daily count is the plan's backup_retention_days; these are the others.
BACKUP_KEEP_HOURLY = env.int("BACKUP_KEEP_HOURLY", default=24)
BACKUP_KEEP_WEEKLY = env.int("BACKUP_KEEP_WEEKLY", default=4)
BACKUP_KEEP_MONTHLY = env.int("BACKUP_KEEP_MONTHLY", default=3)
BACKUP_KEEP_PLATFORM_DAILY = env.int("BACKUP_KEEP_PLATFORM_DAILY", default=14)
# Erasure: backups of a deprovisioned tenant (its final backup too) are deleted after this.
BACKUP_FINAL_RETENTION_DAYS = env.int("BACKUP_FINAL_RETENTION_DAYS", default=30)
# A running backup with no progress for this long is declared dead (killed worker).
BACKUP_STALE_AFTER_SECONDS = env.int("BACKUP_STALE_AFTER_SECONDS", default=900)
BACKUP_DRILL_SAMPLE = env.int("BACKUP_DRILL_SAMPLE", default=3)
# The backups worker stops (warm, for its supervisor to restart it) once it holds more than this.
BACKUP_WORKER_MAX_RSS_MB = env.int("BACKUP_WORKER_MAX_RSS_MB", default=300)
BACKUP_DOWNLOAD_LINK_SECONDS = env.int("BACKUP_DOWNLOAD_LINK_SECONDS", default=900)
# Tenant data exports (a copy of a shop's data) are deleted this long after they are made.
BACKUP_EXPORT_KEEP_DAYS = env.int("BACKUP_EXPORT_KEEP_DAYS", default=7)
# Shown on the backups dashboard, e.g. "RDS PITR, 7 days"; WAL archiving is detected by itself.
BACKUP_PITR_DESCRIPTION = env("BACKUP_PITR_DESCRIPTION", default="")
# A whole-database dump of a large database can take hours.
BACKUP_JOB_TIMEOUT_SECONDS = env.int("BACKUP_JOB_TIMEOUT_SECONDS", default=6 * 3600)
RQ_QUEUES["backups"]["DEFAULT_TIMEOUT"] = BACKUP_JOB_TIMEOUT_SECONDS

# --- Continuous archive and point-in-time recovery (pgBackRest; backups/pitr/, docs/backups.md) ---
# The pgBackRest stanza of the control plane's cluster; empty turns the continuous archive off.
PITR_STANZA = env("PITR_STANZA", default="")
# The cluster's data directory and socket folder on this host (pgBackRest reads the files directly).
PITR_PG_DATA = env("PITR_PG_DATA", default="")
PITR_PG_SOCKET_DIR = env("PITR_PG_SOCKET_DIR", default="/var/run/postgresql")
# Repositories: a folder ("/var/lib/pgbackrest") or "s3://bucket/path?endpoint=https://host:port&region=R"
# (also verify_tls=n, ca_file=F, uri_style=path, host=H to connect to H instead of the endpoint);
# S3 keys are BACKUP_S3_ACCESS_KEY_ID/SECRET.
# PITR_REPO2 is the copy in a second region (WAL and backups go to both).
PITR_REPO1 = env("PITR_REPO1", default="")
PITR_REPO2 = env("PITR_REPO2", default="")
# Where the generated pgbackrest.conf is written (the server's archive_command names it).
PITR_CONFIG_PATH = env("PITR_CONFIG_PATH", default=str(BASE_DIR / ".local/pgbackrest/pgbackrest.conf"))
# Scratch clusters for restores to a moment are made here (room for a whole cluster).
PITR_SCRATCH_DIR = env("PITR_SCRATCH_DIR", default=str(BASE_DIR / ".local" / "pitr-scratch"))
# The OS user that owns the data directory; pgBackRest and pg_ctl run as it when we run as root.
PITR_OS_USER = env("PITR_OS_USER", default="postgres")
# The scheduled backup is a full one when the newest full is older than this, differential otherwise.
PITR_FULL_EVERY_DAYS = env.int("PITR_FULL_EVERY_DAYS", default=7)
PITR_RETENTION_FULL = env.int("PITR_RETENTION_FULL", default=2)

# === Deployments (deployments/): compose hosts and AWS targets ===
# How long a deploy lock lives without a heartbeat (every step log line renews it); a crashed worker's
# lock frees itself after this long.
DEPLOY_LOCK_SECONDS = env.int("DEPLOY_LOCK_SECONDS", default=300)
# Seconds to wait for a Docker Engine to answer before the target counts as unreachable.
DEPLOY_DOCKER_TIMEOUT = env.int("DEPLOY_DOCKER_TIMEOUT", default=10)
# The migration phase: a manage.py command and its arguments (the many-schema migrate by default).
DEPLOY_MIGRATE_COMMAND = env.list("DEPLOY_MIGRATE_COMMAND", default=["migrate_schemas", "--noinput"])
# Compose targets whose stack names "migrate": {"service", "command"} run the release's own migrations
# in a one-off container of its image, with DATABASE_URL set to this direct (not pooled) connection
# (default: BACKUP_DATABASE_URL, else the control plane's own), stopped after the timeout.
DEPLOY_MIGRATE_DATABASE_URL = env("DEPLOY_MIGRATE_DATABASE_URL", default="")
DEPLOY_MIGRATE_TIMEOUT_SECONDS = env.int("DEPLOY_MIGRATE_TIMEOUT_SECONDS", default=1800)
# AWS targets: seconds to wait for an ECS service to become stable / a migration task to stop.
DEPLOY_AWS_WAIT_SECONDS = env.int("DEPLOY_AWS_WAIT_SECONDS", default=600)
# Stack secrets come from each environment's encrypted secret store; with a prefix (e.g. APP_SECRET_)
# they may also come from the worker's environment, but only variables with that prefix. Empty = off.
DEPLOY_SECRET_ENV_PREFIX = env("DEPLOY_SECRET_ENV_PREFIX", default="")
# Endpoint override for AWS (moto_server in tests and demos); empty means the real AWS.
AWS_ENDPOINT_URL = env("AWS_ENDPOINT_URL", default="")
# AWS targets' custom domains: certificates attached to the HTTPS listener by SNI beyond its
# default one (ALB quota: 25 by default, raisable to 100). Domains past it are left off and alerted.
AWS_ALB_CERTIFICATE_LIMIT = env.int("AWS_ALB_CERTIFICATE_LIMIT", default=25)

# === API (api/, docs/api.md) ===
# Requests a minute per API key (Redis, fixed window); 0 turns the limit off.
API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=600)
# Largest request body the API reads, in bytes (413 above it).
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=65536)
# How long an Idempotency-Key's answer is kept for replays (seconds).
API_IDEMPOTENCY_SECONDS = env.int("API_IDEMPOTENCY_SECONDS", default=86400)
API_READ_AUDIT_RETENTION_DAYS = env.int("API_READ_AUDIT_RETENTION_DAYS", default=90)

# === Monitoring (monitoring/): health, metrics, logs, Sentry, tracing, uptime probes, alerts ===
# /metrics (and /readyz details) need the bearer token when METRICS_TOKEN is set; without a token,
# clients in METRICS_ALLOWED_IPS (client address per TRUSTED_PROXIES). Never on shops' hosts.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1/32", "::1/128"])
# Request metrics carry a tenant label for at most this many tenants per process ("other" beyond);
# tenants listed in METRICS_TENANT_LABELS always get their own label. 0 turns tenant labels off.
METRICS_TENANT_LABEL_LIMIT = env.int("METRICS_TENANT_LABEL_LIMIT", default=50)
METRICS_TENANT_LABELS = env.list("METRICS_TENANT_LABELS", default=[])
# Seconds the scrape-time platform gauges (tenants, probes, queues, facts) are reused across scrapes
# and workers; 0: computed on every scrape. Worth it when several Prometheus servers scrape.
METRICS_CACHE_SECONDS = env.int("METRICS_CACHE_SECONDS", default=0)
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
# Tracing: OpenTelemetry spans over OTLP/HTTP (Jaeger: http://jaeger:4318), only when an endpoint
# is set; off otherwise. The standard OTEL_* variables: a base endpoint (/v1/traces is appended)
# or the traces endpoint itself; OTEL_TRACES_SAMPLER_ARG is the share of requests and jobs traced.
_otlp_base = env("OTEL_EXPORTER_OTLP_ENDPOINT", default="")
TRACING_OTLP_ENDPOINT = env(
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", default=f"{_otlp_base.rstrip('/')}/v1/traces" if _otlp_base else ""
)
TRACING_SERVICE_NAME = env("OTEL_SERVICE_NAME", default="control-plane")
TRACING_RELEASE = env("OTEL_SERVICE_VERSION", default=SENTRY_RELEASE or env("RELEASE_VERSION", default=""))
TRACING_SAMPLE_RATIO = env.float("OTEL_TRACES_SAMPLER_ARG", default=1.0)
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
# Channel secrets are encrypted with PLATFORM_ENCRYPTION_KEYS. Before that, under a key derived from
# this (SECRET_KEY when empty): read only by migration monitoring 0003, which re-encrypts them.
MONITORING_SECRETS_KEY = env("MONITORING_SECRETS_KEY", default="")

# === Webhooks (webhooks/, docs/webhooks.md): signed events out, retried from RQ ===
# Seconds to wait before each retry after a failed attempt; the delivery gives up after the last
# (default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h: 7 attempts over about 17.6 hours).
WEBHOOK_RETRY_SCHEDULE = [
    int(s) for s in env.list("WEBHOOK_RETRY_SCHEDULE", default=["5", "300", "1800", "7200", "18000", "36000"])
]
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=15.0)
# The start of each receiver's answer that is kept with the attempt (the rest is not read).
WEBHOOK_RESPONSE_MAX_BYTES = env.int("WEBHOOK_RESPONSE_MAX_BYTES", default=2048)
# An endpoint is disabled (and audited) after this many failed attempts in a row spanning at least
# this many hours; a success resets the count.
WEBHOOK_DISABLE_AFTER_FAILURES = env.int("WEBHOOK_DISABLE_AFTER_FAILURES", default=15)
WEBHOOK_DISABLE_AFTER_HOURS = env.float("WEBHOOK_DISABLE_AFTER_HOURS", default=24.0)
# After a secret rotation the old secret also signs (a second signature) this long.
WEBHOOK_SECRET_ROTATION_GRACE_HOURS = env.float("WEBHOOK_SECRET_ROTATION_GRACE_HOURS", default=24.0)
# certificate.expiring is sent once per certificate this many days before it expires.
WEBHOOK_CERTIFICATE_EXPIRING_DAYS = env.int("WEBHOOK_CERTIFICATE_EXPIRING_DAYS", default=14)
# Messages, their deliveries and every attempt are kept this long (pruned daily).
WEBHOOK_RETENTION_DAYS = env.int("WEBHOOK_RETENTION_DAYS", default=30)
