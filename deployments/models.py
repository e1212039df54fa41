from django.db import models
from django.utils import timezone

from deployments.stack import default_stack


class Environment(models.Model):
    """development, staging, production: a name operators type (`--env production`)."""

    name = models.SlugField(max_length=50, unique=True)
    description = models.CharField(max_length=200, blank=True)
    is_enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Target(models.Model):
    """Where an environment runs: a Docker Engine host (compose) or an ECS cluster on AWS.

    No credential is stored here: Docker TLS material is named by file path, SSH uses the worker's
    own keys, and AWS credentials come from the worker's environment or instance role.
    """

    class Kind(models.TextChoices):
        COMPOSE = "compose", "Docker Compose host"
        AWS = "aws", "AWS ECS"

    environment = models.OneToOneField(Environment, on_delete=models.PROTECT, related_name="target")
    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.COMPOSE)
    is_enabled = models.BooleanField(default=True)
    stack = models.JSONField(default=default_stack, help_text="Services, volumes and networks (see docs).")

    # Compose host
    docker_host = models.CharField(
        max_length=300,
        blank=True,
        help_text="unix:///var/run/docker.sock, tcp://host:2376 or ssh://user@host",
    )
    docker_tls_ca = models.CharField(
        max_length=300, blank=True, help_text="Path to the CA file (tcp:// + TLS)"
    )
    docker_tls_cert = models.CharField(max_length=300, blank=True, help_text="Path to the client cert")
    docker_tls_key = models.CharField(max_length=300, blank=True, help_text="Path to the client key")
    project = models.SlugField(max_length=60, blank=True, help_text="Compose project name (container prefix)")
    edge_listen = models.CharField(
        max_length=100, blank=True, default="0.0.0.0:80", help_text="host:port the edge nginx listens on"
    )
    edge_image = models.CharField(max_length=300, blank=True, default="nginx:1.27-alpine")
    # Where the control plane reaches the app containers for the HTTP probe (the docker host's address).
    probe_host = models.CharField(max_length=200, blank=True, default="127.0.0.1")
    health_timeout_seconds = models.PositiveIntegerField(default=120)
    drain_seconds = models.FloatField(default=5.0)
    run_migrations = models.BooleanField(default=True)

    # AWS
    aws_region = models.CharField(max_length=30, blank=True)
    ecs_cluster = models.CharField(max_length=255, blank=True)
    ecs_services = models.JSONField(default=dict, blank=True, help_text='{"backend": "ecs-service-name"}')
    subnets = models.JSONField(default=list, blank=True)
    security_groups = models.JSONField(default=list, blank=True)
    target_groups = models.JSONField(
        default=dict,
        blank=True,
        help_text='For blue-green, per app service: {"api": {"blue": "arn:...", "green": "arn:..."}}; '
        'a flat {"blue": ..., "green": ...} pair when the stack has one app service',
    )
    listener_arn = models.CharField(max_length=500, blank=True)
    # Custom domains and platform subdomains on AWS (deployments/engines/aws_domains.py).
    https_listener_arn = models.CharField(
        max_length=500, blank=True,
        help_text="The ALB's HTTPS listener: custom domains' certificates are attached to it by SNI, the "
        "platform wildcard becomes its default certificate. Empty: no certificates are managed.",
    )
    hosted_zone_id = models.CharField(
        max_length=64, blank=True,
        help_text="Route 53 hosted zone of PLATFORM_BASE_DOMAIN: *.<base> gets an alias record to the "
        "ALB. Empty: no DNS records are managed (set it on the one target that serves the shops).",
    )
    execution_role_name = models.CharField(max_length=200, blank=True)
    task_role_name = models.CharField(max_length=200, blank=True)

    # State: what serves now, and the deploy lock (expires, so a crashed worker cannot hold it forever).
    live_release = models.ForeignKey(
        "Release", null=True, blank=True, on_delete=models.PROTECT, related_name="live_on"
    )
    live_color = models.CharField(max_length=10, blank=True)
    lock_deployment = models.ForeignKey(
        "Deployment", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    lock_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    @property
    def is_locked(self) -> bool:
        return bool(self.lock_expires_at and self.lock_expires_at > timezone.now())


class Release(models.Model):
    version = models.CharField(max_length=64, unique=True, help_text="Semantic version, e.g. 1.4.0")
    images = models.JSONField(help_text='Image per service: {"backend": "registry/api:1.4.0@sha256:..."}')
    git_sha = models.CharField(max_length=40, blank=True)
    notes = models.TextField(blank=True)
    backward_compatible_migrations = models.BooleanField(
        default=True, help_text="Untick when the previous release cannot run on this release's schema."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.version


class Deployment(models.Model):
    class Strategy(models.TextChoices):
        BLUE_GREEN = "blue-green", "Blue-green"
        ROLLING = "rolling", "Rolling"

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        ROLLING_BACK = "rolling_back", "Rolling back"
        ROLLED_BACK = "rolled_back", "Rolled back"
        FAILED = "failed", "Failed"

    FINISHED = (Status.SUCCEEDED, Status.ROLLED_BACK, Status.FAILED)

    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="deployments")
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="deployments")
    previous_release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.BLUE_GREEN)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PLANNED, db_index=True)
    is_rollback = models.BooleanField(default=False)
    plan = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Deployments are written only by the services; these gate who may ask for one.
        permissions = [
            ("deploy_release", "Can deploy a release to an environment"),
            ("rollback_release", "Can roll an environment back to an earlier release"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.release} -> {self.target.environment} ({self.status})"


class DeploymentStep(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class DeploymentLogLine(models.Model):
    step = models.ForeignKey(DeploymentStep, on_delete=models.CASCADE, related_name="lines")
    at = models.DateTimeField(default=timezone.now)
    text = models.TextField()

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.at:%H:%M:%S} {self.text[:80]}"


class EnvironmentSecret(models.Model):
    """A value an environment's app containers may receive, by name (``stack.services.*.secrets``).

    Write-only: the value is encrypted with PLATFORM_ENCRYPTION_KEYS (``core.crypto``), set or replaced
    through ``deployments.secrets`` and never shown again. The stack can name only these (or, where
    DEPLOY_SECRET_ENV_PREFIX is set, prefixed variables of the worker's environment).
    """

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=128, help_text="What the stack's secrets refer to, e.g. DB_PASSWORD")
    value_encrypted = models.TextField(editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_by = models.CharField(max_length=200, blank=True, editable=False)

    class Meta:
        ordering = ["environment__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "name"], name="deployments_secret_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.environment}: {self.name}"
