from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from monitoring import collectors  # noqa: F401  (registers the scrape-time metric sources)
        from monitoring.errors import sentry_init

        sentry_init(
            dsn=settings.SENTRY_DSN,
            release=settings.SENTRY_RELEASE,
            environment=settings.SENTRY_ENVIRONMENT,
            traces_sample_rate=settings.SENTRY_TRACES_SAMPLE_RATE,
        )
