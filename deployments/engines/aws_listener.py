"""The blue-green half of the AWS target: the ALB listener's forwards and its target groups.

A mixin of AwsEngine (deployments/engines/aws.py), which provides ``target``, ``stack``,
``client()``, ``log()`` and ``listener_before`` (what undo() puts back).
"""

import time
from typing import Any

from django.conf import settings

from deployments.errors import DeploymentValidationError, StepFailed
from deployments.models import Target
from deployments.stack import app_services


class AwsListenerMixin:
    target: Target
    stack: dict
    listener_before: dict[str | None, list[dict]]

    def client(self, service: str) -> Any:
        raise NotImplementedError

    def log(self, text: str) -> None:
        raise NotImplementedError

    def service_groups(self, service: str) -> dict[str, str]:
        """The service's {"blue": arn, "green": arn} target groups."""
        groups = self.target.target_groups or {}
        if set(groups) == {"blue", "green"} and all(isinstance(v, str) for v in groups.values()):
            if len(app_services(self.stack)) == 1:
                return groups
            raise DeploymentValidationError(
                "target_groups names one blue/green pair but the stack has several app services; give one "
                'pair per service: {"api": {"blue": arn, "green": arn}, "web": {...}}.'
            )
        pair = groups.get(service)
        if not isinstance(pair, dict) or set(pair) != {"blue", "green"}:
            raise DeploymentValidationError(
                f'Blue-green on AWS needs target_groups.{service} = {{"blue": arn, "green": arn}}.'
            )
        return pair

    @staticmethod
    def _forwarded(actions: list[dict]) -> str | None:
        for action in actions:
            if action.get("TargetGroupArn"):
                return action["TargetGroupArn"]
            groups = (action.get("ForwardConfig") or {}).get("TargetGroups") or []
            if groups:
                return max(groups, key=lambda g: g.get("Weight", 1))["TargetGroupArn"]
        return None

    def listener_routes(self) -> dict[str | None, list[dict]]:
        """The listener's actions: rule ARN (None for the default action) -> actions."""
        rules = self.client("elbv2").describe_rules(ListenerArn=self.target.listener_arn)["Rules"]
        return {None if r.get("IsDefault") else r["RuleArn"]: r["Actions"] for r in rules}

    def live_color(self) -> str:
        """The one colour the listener sends every app service to; refused when it is not one."""
        forwarded = {self._forwarded(actions) for actions in self.listener_routes().values()}
        colors = {}
        for service in app_services(self.stack):
            on = {color for color, arn in self.service_groups(service).items() if arn in forwarded}
            if len(on) != 1:
                raise DeploymentValidationError(
                    f"The listener forwards to {'both' if on else 'neither'} of {service}'s blue and green "
                    "target groups; point its default action or one rule at exactly one of them."
                )
            colors[service] = on.pop()
        if len(set(colors.values())) > 1:
            raise DeploymentValidationError(
                "The listener sends app services to different colours ("
                + ", ".join(f"{s}: {c}" for s, c in sorted(colors.items()))
                + "); point them all at the same colour first."
            )
        return next(iter(colors.values()))

    def wait_targets_healthy(self, service: str, color: str) -> None:
        arn = self.service_groups(service)[color]
        deadline = time.monotonic() + settings.DEPLOY_AWS_WAIT_SECONDS
        while True:
            health = self.client("elbv2").describe_target_health(TargetGroupArn=arn)[
                "TargetHealthDescriptions"
            ]
            states = [h["TargetHealth"]["State"] for h in health]
            if states and all(s == "healthy" for s in states):
                self.log(f"target group {service} {color}: {len(states)} healthy target(s)")
                return
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"Target group {service} {color} ({arn}) has no healthy targets within "
                    f"{settings.DEPLOY_AWS_WAIT_SECONDS} s (states: {states or 'no targets'})."
                )
            time.sleep(0.5)

    def shift_listener(self, live: str, idle: str) -> None:
        """Every forward to a live group now goes to its idle twin (default action and rules)."""
        twin: dict[str | None, str] = {}  # keyed like _forwarded's answer, which may be None
        for service in app_services(self.stack):
            groups = self.service_groups(service)
            twin[groups[live]] = groups[idle]
        elb = self.client("elbv2")
        for rule, actions in self.listener_routes().items():
            new = twin.get(self._forwarded(actions))
            if new is None:
                continue  # a rule for something else (redirects, fixed responses): left alone
            self.listener_before.setdefault(rule, actions)
            forward = [{"Type": "forward", "TargetGroupArn": new}]
            if rule is None:
                elb.modify_listener(ListenerArn=self.target.listener_arn, DefaultActions=forward)
            else:
                elb.modify_rule(RuleArn=rule, Actions=forward)
            self.log(
                f"listener {'default action' if rule is None else 'rule ' + rule.rsplit('/', 1)[-1]}: "
                f"now forwards to {new.rsplit(':', 1)[-1]}"
            )
        if self.live_color() != idle:
            raise StepFailed(f"The listener did not take the new actions: it does not forward to {idle}.")

    def restore_listener(self) -> None:
        elb = self.client("elbv2")
        for rule, actions in self.listener_before.items():
            if rule is None:
                elb.modify_listener(ListenerArn=self.target.listener_arn, DefaultActions=actions)
            else:
                elb.modify_rule(RuleArn=rule, Actions=actions)
        if self.listener_before:
            self.log("listener: restored")
