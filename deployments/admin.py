"""The deployments console: environments, targets, releases, deploy with a plan preview, the live
step log, rollback, and which release is live where. Thin: every action calls a service and enqueues
the deploy job."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from core.admin import ReadOnlyAdminMixin
from core.audit import Actor
from deployments import services
from deployments.errors import DeploymentError
from deployments.jobs import deploy_job
from deployments.models import Deployment, Environment, EnvironmentSecret, Release, Target
from deployments.secrets import environment_secret_delete, environment_secret_problems, environment_secret_set
from deployments.validation import image_ref_parse, version_normalise


def _enqueue(deployment: Deployment, actor: Actor) -> None:
    deploy_job.delay(deployment.pk, *actor.job_args)


DEPLOY_PERMISSION = "deployments.deploy_release"
ROLLBACK_PERMISSION = "deployments.rollback_release"


def _require(request: HttpRequest, permission: str) -> None:
    # Checked before anything is read or planned: a preview already talks to the target.
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"This needs the {permission} permission (platform operators).")


class TargetInline(admin.StackedInline):
    model = Target
    extra = 0
    fields = ["name", "kind", "is_enabled"]
    show_change_link = True


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "is_enabled", "target_name", "live_release"]
    inlines = [TargetInline]

    @admin.display(description="Target")
    def target_name(self, obj):
        target = Target.objects.filter(environment=obj).first()
        return target.name if target else "-"

    @admin.display(description="Live release")
    def live_release(self, obj):
        target = Target.objects.filter(environment=obj).select_related("live_release").first()
        return target.live_release.version if target and target.live_release else "-"


class TargetForm(forms.ModelForm):
    """Refuses a stack that may never be deployed; one that only lacks secrets still saves (warning)."""

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data
        if cleaned.get("environment") is not None and "stack" in cleaned:
            refusals = services.stack_refusals(
                environment=cleaned["environment"],
                stack=cleaned["stack"],
                kind=cleaned.get("kind") or Target.Kind.COMPOSE,
            )
            if refusals:
                self.add_error("stack", refusals)
        return cleaned


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    form = TargetForm
    list_display = ["name", "environment", "kind", "is_enabled", "live_release", "live_color", "locked"]
    list_filter = ["kind", "is_enabled"]
    readonly_fields = [
        "live_release",
        "live_color",
        "lock_deployment",
        "lock_expires_at",
        "rendered_compose",
        "rendered_proxy",
    ]
    fieldsets = [
        (None, {"fields": ["environment", "name", "kind", "is_enabled", "stack", "project"]}),
        (
            "Compose host",
            {
                "fields": [
                    "docker_host",
                    "docker_tls_ca",
                    "docker_tls_cert",
                    "docker_tls_key",
                    "edge_listen",
                    "edge_image",
                    "health_timeout_seconds",
                    "drain_seconds",
                    "run_migrations",
                ]
            },
        ),
        (
            "AWS (credentials come from the worker's environment or instance role)",
            {
                "fields": [
                    "aws_region",
                    "ecs_cluster",
                    "ecs_services",
                    "subnets",
                    "security_groups",
                    "target_groups",
                    "listener_arn",
                    "https_listener_arn",
                    "hosted_zone_id",
                    "execution_role_name",
                    "task_role_name",
                ]
            },
        ),
        ("State", {"fields": ["live_release", "live_color", "lock_deployment", "lock_expires_at"]}),
        (
            "docker-compose.yml (secrets appear as ${NAME} references)",
            {"fields": ["rendered_compose", "rendered_proxy"]},
        ),
    ]

    @admin.display(boolean=True)
    def locked(self, obj):
        return obj.is_locked

    @admin.display(description="Rendered")
    def rendered_compose(self, obj):
        if not obj.pk:
            return "-"
        try:
            return format_html("<pre>{}</pre>", services.target_render_compose(target=obj))
        except DeploymentError as exc:
            return str(exc)

    @admin.display(description="Release proxy nginx.conf")
    def rendered_proxy(self, obj):
        if not obj.pk:
            return "-"
        try:
            return format_html("<pre>{}</pre>", services.target_render_proxy_config(target=obj))
        except DeploymentError as exc:
            return str(exc)

    def save_model(self, request, obj, form, change):
        problems = services.target_problems(obj)
        if problems:
            messages.warning(request, "Saved, but this target cannot be deployed yet: " + " ".join(problems))
        super().save_model(request, obj, form, change)


class DeployForm(forms.Form):
    environment = forms.ModelChoiceField(Environment.objects.filter(is_enabled=True), to_field_name="name")
    strategy = forms.ChoiceField(choices=Deployment.Strategy.choices)


@admin.register(Release)
class ReleaseAdmin(admin.ModelAdmin):
    list_display = [
        "version",
        "git_sha",
        "backward_compatible_migrations",
        "live_on_environments",
        "created_at",
        "deploy_link",
    ]
    search_fields = ["version", "git_sha", "notes"]
    readonly_fields = ["created_at"]

    @admin.display(description="Live on")
    def live_on_environments(self, obj):
        return ", ".join(t.environment.name for t in obj.live_on.select_related("environment")) or "-"

    def get_list_display(self, request):
        # Only those who may deploy see the link (the page itself refuses everyone else).
        shown = super().get_list_display(request)
        if request.user.has_perm("deployments.deploy_release"):
            return shown
        return [name for name in shown if name != "deploy_link"]

    @admin.display(description="")
    def deploy_link(self, obj):
        return format_html(
            '<a href="{}">Deploy…</a>', reverse("admin:deployments_release_deploy", args=[obj.pk])
        )

    def get_readonly_fields(self, request, obj=None):
        # Releases are immutable once recorded.
        return ["version", "images", "git_sha", "backward_compatible_migrations", "created_at"] if obj else []

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        created = services.release_create(
            version=obj.version,
            images=obj.images,
            git_sha=obj.git_sha,
            notes=obj.notes,
            backward_compatible_migrations=obj.backward_compatible_migrations,
            actor=Actor.staff(request.user),
        )
        obj.pk, obj.version = created.pk, created.version

    def get_form(
        self, request: HttpRequest, obj: Release | None = None, change: bool = False, **kwargs: Any
    ) -> "type[forms.ModelForm[Any]]":
        form = super().get_form(request, obj, change, **kwargs)

        # mypy cannot check a base class that is only known at run time (the form get_form built).
        class ValidatingForm(form):  # type: ignore[valid-type,misc]
            def clean(self):
                data = super().clean()
                if obj is None and data.get("version") and data.get("images") is not None:
                    try:
                        version_normalise(data["version"])
                        if not isinstance(data["images"], dict) or not data["images"]:
                            raise DeploymentError('Give images as {"service": "registry/name:tag"}.')
                        for service, ref in data["images"].items():
                            image_ref_parse(service, ref)
                    except DeploymentError as exc:
                        raise forms.ValidationError(str(exc)) from None
                return data

        return ValidatingForm

    def get_urls(self):
        return [
            path(
                "<int:pk>/deploy/",
                self.admin_site.admin_view(self.deploy_view),
                name="deployments_release_deploy",
            )
        ] + super().get_urls()

    def deploy_view(self, request, pk):
        """GET/POST with preview: the plan read from the target; POST with confirm: deploy."""
        _require(request, DEPLOY_PERMISSION)
        release = get_object_or_404(Release, pk=pk)
        form = DeployForm(request.POST or None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "release": release,
            "form": form,
            "title": f"Deploy {release.version}",
        }
        if request.method == "POST" and form.is_valid():
            env, strategy = form.cleaned_data["environment"].name, form.cleaned_data["strategy"]
            try:
                if "confirm" in request.POST:
                    deployment = services.deployment_create(
                        environment=env,
                        version=release.version,
                        strategy=strategy,
                        actor=Actor.staff(request.user),
                    )
                    _enqueue(deployment, Actor.staff(request.user))
                    messages.success(
                        request, f"Deployment #{deployment.pk} of {release.version} to {env} queued."
                    )
                    return redirect("admin:deployments_deployment_change", deployment.pk)
                target = services.environment_target(environment=env)
                problems = services.target_problems(target) + services.release_problems(
                    release=release, target=target
                )
                if problems:
                    raise DeploymentError(" ".join(problems))
                context["plan"] = services.deployment_plan(target=target, release=release, strategy=strategy)
            except DeploymentError as exc:
                context["error"] = str(exc)
        return TemplateResponse(request, "admin/deployments/release/deploy.html", context)


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Deployments start from a release's "Deploy…" page and are written only by the services."""

    list_display = [
        "id",
        "release",
        "environment",
        "strategy",
        "status",
        "is_rollback",
        "created_at",
        "finished_at",
        "requested_by",
    ]
    list_filter = ["status", "strategy", "target__environment"]
    list_select_related = ["release", "target__environment"]
    readonly_fields = (
        "target",
        "release",
        "previous_release",
        "strategy",
        "status",
        "is_rollback",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "error",
        "plan",
        "step_log",
    )
    fields = readonly_fields

    @admin.display(description="Environment")
    def environment(self, obj):
        return obj.target.environment

    @admin.display(description="Steps")
    def step_log(self, obj):
        rows = []
        for step in obj.steps.prefetch_related("lines"):
            lines = format_html_join(
                "",
                "<div><code>{} {}</code></div>",
                ((line.at.strftime("%H:%M:%S.%f")[:-3], line.text) for line in step.lines.all()),
            )
            rows.append(
                format_html(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    step.name,
                    step.status,
                    step.started_at.strftime("%H:%M:%S"),
                    step.finished_at.strftime("%H:%M:%S") if step.finished_at else "…",
                    lines,
                )
            )
        if not rows:
            return "No steps yet."
        head = format_html(
            "<tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            "Step",
            "Status",
            "Started",
            "Finished",
            "Log",
        )
        return format_html("<table>{}{}</table>", head, format_html_join("", "{}", ((r,) for r in rows)))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        deployment = get_object_or_404(Deployment, pk=object_id)
        extra_context = {
            **(extra_context or {}),
            # The page refreshes itself while the deployment runs: a live step log without JavaScript.
            "live": deployment.status not in Deployment.FINISHED,
            "can_roll_back_to": request.user.has_perm(ROLLBACK_PERMISSION)
            and deployment.status == Deployment.Status.SUCCEEDED
            and deployment.target.live_release_id != deployment.release_id,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path(
                "<int:pk>/rollback/",
                self.admin_site.admin_view(self.rollback_view),
                name="deployments_deployment_rollback",
            )
        ] + super().get_urls()

    def rollback_view(self, request, pk):
        """Confirmation page, then a blue-green deployment of this (earlier, successful) release."""
        _require(request, ROLLBACK_PERMISSION)
        deployment = get_object_or_404(
            Deployment.objects.select_related("release", "target__environment"), pk=pk
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "deployment": deployment,
            "title": f"Roll back {deployment.target.environment} to {deployment.release.version}",
        }
        if request.method == "POST":
            actor = Actor.staff(request.user)
            try:
                rollback = services.rollback_create(
                    environment=deployment.target.environment.name,
                    to_version=deployment.release.version,
                    confirm_migrations=bool(request.POST.get("confirm_migrations")),
                    actor=actor,
                )
            except DeploymentError as exc:
                context["error"] = str(exc)
            else:
                _enqueue(rollback, actor)
                messages.success(request, f"Rollback #{rollback.pk} to {deployment.release.version} queued.")
                return redirect("admin:deployments_deployment_change", rollback.pk)
        return TemplateResponse(request, "admin/deployments/deployment/rollback.html", context)


class WriteOnlyTextarea(forms.Textarea):
    """Never renders a value back, not even the one just typed when the form has an error."""

    def format_value(self, value):
        return None


class EnvironmentSecretForm(forms.ModelForm):
    value = forms.CharField(
        widget=WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"}),
        strip=False,
        help_text="Stored encrypted and never shown again. If this page reports an error, "
        "enter the value again: it is not kept.",
    )

    class Meta:
        model = EnvironmentSecret
        fields = ["environment", "name"]
        help_texts = {
            "name": 'The name the target\'s stack refers to under "secrets": letters, digits and _, '
            "e.g. APP_DB_PASSWORD.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:  # the stored value is never shown: this page can only replace it
            self.fields["value"].label = "New value"
            self.fields["value"].help_text = (
                "The stored value is never shown. To replace it, enter the new value and save; "
                "to keep it, leave this page without saving."
            )

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data
        name = cleaned.get("name", self.instance.name) or ""
        # Each problem beside the field it is about (the name is read-only once stored).
        name_problems = environment_secret_problems(name=name, value=None)
        problems = environment_secret_problems(name=name, value=cleaned.get("value"))
        for problem in problems:
            if problem in name_problems:
                self.add_error("name" if "name" in self.fields else None, problem)
            else:
                self.add_error("value", problem)
        return cleaned


@admin.register(EnvironmentSecret)
class EnvironmentSecretAdmin(admin.ModelAdmin):
    """Write-only: set, replace, delete; the value is never displayed (deployments.secrets)."""

    form = EnvironmentSecretForm
    list_display = ["name", "environment", "updated_at", "updated_by"]
    list_filter = ["environment"]
    search_fields = ["name"]

    def get_readonly_fields(self, request, obj=None):
        # Renaming would orphan the stacks that refer to it: delete and add instead.
        return ["environment", "name", "updated_at", "updated_by"] if obj else []

    def get_fields(self, request, obj=None):
        # Which secret first, then its value (the stock order puts read-only fields last).
        if obj:
            return ["environment", "name", "value", "updated_at", "updated_by"]
        return ["environment", "name", "value"]

    def save_model(self, request, obj, form, change):
        saved = environment_secret_set(
            environment=obj.environment,
            name=obj.name,
            value=form.cleaned_data["value"],
            actor=Actor.staff(request.user),
        )
        obj.pk, obj.value_encrypted = saved.pk, saved.value_encrypted

    def delete_model(self, request, obj):
        environment_secret_delete(secret=obj, actor=Actor.staff(request.user))

    def delete_queryset(self, request, queryset):
        for secret in queryset.select_related("environment"):
            environment_secret_delete(secret=secret, actor=Actor.staff(request.user))
