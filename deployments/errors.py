from core.errors import PlatformError


class DeploymentError(PlatformError):
    """A refused or failed deployment operation; the message says what to fix."""


class DeploymentValidationError(DeploymentError):
    pass


class TargetLocked(DeploymentError):
    pass


class TargetUnreachable(DeploymentError):
    pass


class StepFailed(DeploymentError):
    pass
