from core.errors import PlatformError


class ApiError(PlatformError):
    """A refused API operation; the message says what to fix."""


class KeyValidationError(ApiError):
    pass


class ScopeMissing(ApiError):
    def __init__(self, scope: str):
        super().__init__(
            f"This key lacks the {scope!r} scope; ask for a key with it (staff make keys in the admin)."
        )
        self.scope = scope


class RateLimited(ApiError):
    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class IdempotencyConflict(ApiError):
    pass


class IdempotencyMismatch(ApiError):
    pass
