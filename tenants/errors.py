class TenantError(Exception):
    """A refused or failed tenant operation; the message says what to fix."""


class TenantValidationError(TenantError):
    pass


class PlanLimitExceeded(TenantError):
    pass


class TenantStateError(TenantError):
    pass
