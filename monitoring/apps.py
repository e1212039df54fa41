from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from monitoring import collectors  # noqa: F401  (registers the scrape-time metric sources)
        from monitoring.errors import sentry_init
        from monitoring.tracing import tracing_init

        sentry_init(
            dsn=settings.SENTRY_DSN,
            release=settings.SENTRY_RELEASE,
            environment=settings.SENTRY_ENVIRONMENT,
            traces_sample_rate=settings.SENTRY_TRACES_SAMPLE_RATE,
        )
        # Per process, after any fork gunicorn does without --preload (see monitoring/otel.py).
        tracing_init(
            endpoint=settings.TRACING_OTLP_ENDPOINT,
            service_name=settings.TRACING_SERVICE_NAME,
            release=settings.TRACING_RELEASE,
            environment=settings.SENTRY_ENVIRONMENT,
            sample_ratio=settings.TRACING_SAMPLE_RATIO,
        )
