from core.errors import PlatformError


class TenantError(PlatformError):
    """A refused or failed tenant operation; the message says what to fix."""


class TenantValidationError(TenantError):
    pass


class PlanLimitExceeded(TenantError):
    pass


class TenantStateError(TenantError):
    pass
