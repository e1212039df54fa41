from core.errors import PlatformError


class WebhookError(PlatformError):
    """A webhook endpoint or delivery request that cannot be done; the message says what to fix."""
