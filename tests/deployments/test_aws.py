"""The AWS target against a real AWS API stand-in (moto_server): ECS, EC2, ELBv2, IAM, SSM."""

import json

import boto3
import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from core.audit import Actor
from deployments.engines.aws import AwsEngine
from deployments.errors import DeploymentValidationError, TargetUnreachable
from deployments.models import Deployment, DeploymentLogLine, Environment, Release, Target
from deployments.secrets import environment_secret_set
from deployments.services import deployment_create, deployment_run, release_create
from platform_site.devservices import free_port

ACTOR = Actor.command("pytest")
REGION = "eu-west-1"
# Blue-green and rolling cut-overs against moto, each on freshly built VPC, ALB and ECS services.
pytestmark = pytest.mark.slow
IMAGE_V1 = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api:1.0.0"
IMAGE_V2 = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api@sha256:" + "b" * 64


@pytest.fixture
def aws(moto_url, settings, monkeypatch):
    requests.post(f"{moto_url}/moto-api/reset", timeout=10)
    settings.AWS_ENDPOINT_URL = moto_url
    settings.DEPLOY_AWS_WAIT_SECONDS = 3
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)

    def client(name):
        return boto3.client(name, region_name=REGION, endpoint_url=moto_url)

    return client


def create_blue_green_services(ecs, name, td, net, groups, *, port: int, live_count: int) -> None:
    """<name>-blue (live, ``live_count`` tasks) and <name>-green (idle), each behind its target group."""
    for color, count in (("blue", live_count), ("green", 0)):
        ecs.create_service(
            cluster="shop",
            serviceName=f"{name}-{color}",
            taskDefinition=td,
            desiredCount=count,
            launchType="FARGATE",
            networkConfiguration=net,
            loadBalancers=[{"targetGroupArn": groups[color], "containerName": name, "containerPort": port}],
        )


def build_infrastructure(client) -> dict:
    """What Terraform would have made: VPC, subnets, ALB with two target groups, ECS services."""
    ec2, elb, ecs, iam, ssm = (client(n) for n in ("ec2", "elbv2", "ecs", "iam", "ssm"))
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # as awsvpc tasks need
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"][
            "SubnetId"
        ]
        for i, az in ((1, "a"), (2, "b"))
    ]
    sg = ec2.create_security_group(GroupName="shop-api", Description="api", VpcId=vpc)["GroupId"]
    iam.create_role(
        RoleName="shop-exec",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    ssm.put_parameter(Name="/shop/DATABASE_URL", Value="postgres://u:secret@db/shop", Type="SecureString")
    lb = elb.create_load_balancer(Name="shop", Subnets=subnets, SecurityGroups=[sg])["LoadBalancers"][0]
    groups = {
        c: elb.create_target_group(
            Name=f"shop-api-{c}", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip"
        )["TargetGroups"][0]["TargetGroupArn"]
        for c in ("blue", "green")
    }
    listener = elb.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": groups["blue"]}],
    )["Listeners"][0]["ListenerArn"]
    ecs.create_cluster(clusterName="shop")
    td = ecs.register_task_definition(
        family="shop-api",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[
            {
                "name": "api",
                "image": IMAGE_V1,
                "essential": True,
                "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    net = {"awsvpcConfiguration": {"subnets": subnets, "securityGroups": [sg]}}
    create_blue_green_services(ecs, "api", td, net, groups, port=8080, live_count=1)
    ecs.create_service(
        cluster="shop",
        serviceName="api",
        taskDefinition=td,
        desiredCount=1,
        launchType="FARGATE",
        networkConfiguration=net,
    )
    # The tasks' addresses as ECS would register them (moto runs no containers).
    elb.register_targets(TargetGroupArn=groups["blue"], Targets=[{"Id": "10.0.1.10", "Port": 8080}])
    return {"subnets": subnets, "sg": sg, "groups": groups, "listener": listener, "td": td}


def stack() -> dict:
    return {
        "services": {
            "api": {
                "role": "app",
                "port": 8080,
                "health_path": "/healthz",
                "secrets": {"DATABASE_URL": "DATABASE_URL"},
                "healthcheck": {
                    "test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/healthz"],
                    "interval": "10s",
                    "timeout": "3s",
                    "retries": 3,
                },
            }
        },
        "edge": {"routes": {"/": "api"}},
        "migrate": {"service": "api", "command": ["/app/manage", "migrate_schemas"]},
    }


@pytest.fixture
def aws_target(db, aws):
    infra = build_infrastructure(aws)
    target = Target.objects.create(
        environment=Environment.objects.create(name="staging"),
        name="ecs-staging",
        kind=Target.Kind.AWS,
        project="shop",
        aws_region=REGION,
        ecs_cluster="shop",
        stack=stack(),
        ecs_services={"api": {"blue": "api-blue", "green": "api-green"}},
        subnets=infra["subnets"],
        security_groups=[infra["sg"]],
        target_groups=infra["groups"],
        listener_arn=infra["listener"],
        execution_role_name="shop-exec",
        drain_seconds=0,
    )
    release_create(version="2.0.0", images={"api": IMAGE_V2}, actor=ACTOR)
    return target, infra


def forward_of(aws, infra) -> str:
    listener = aws("elbv2").describe_listeners(ListenerArns=[infra["listener"]])["Listeners"][0]
    return listener["DefaultActions"][0]["TargetGroupArn"]


def service(aws, name) -> dict:
    return aws("ecs").describe_services(cluster="shop", services=[name])["services"][0]


def test_plan_shows_the_task_definition_diff_and_listener_shift(aws_target, aws, capsys):
    target, infra = aws_target
    call_command("deploy_release", "2.0.0", "--env", "staging", "--plan-only")
    plan = json.loads(capsys.readouterr().out)
    changes = plan["services"]["api"]["changes"]
    assert changes["image"] == {"from": IMAGE_V1, "to": IMAGE_V2}
    assert changes["secrets"]["to"] == [["DATABASE_URL", "/shop/DATABASE_URL"]]
    assert plan["services"]["api"]["ecs_service"] == "api-green"
    assert plan["listener"] == {
        "from": "blue",
        "to": "green",
        "target_groups": {"api": infra["groups"]["green"]},
    }
    # Nothing registered, nothing moved.
    assert aws("ecs").list_task_definitions(familyPrefix="shop-api")["taskDefinitionArns"] == [infra["td"]]
    assert forward_of(aws, infra) == infra["groups"]["blue"] and not Deployment.objects.exists()


def test_blue_green_shifts_the_listener_after_migration_task_and_health(aws_target, aws):
    target, infra = aws_target
    aws("elbv2").register_targets(
        TargetGroupArn=infra["groups"]["green"], Targets=[{"Id": "10.0.2.10", "Port": 8080}]
    )
    deployment = deployment_run(
        deployment=deployment_create(environment="staging", version="2.0.0", actor=ACTOR), actor=ACTOR
    )
    assert deployment.status == Deployment.Status.SUCCEEDED, deployment.error
    assert forward_of(aws, infra) == infra["groups"]["green"]
    green, blue = service(aws, "api-green"), service(aws, "api-blue")
    assert blue["desiredCount"] == 0 and green["desiredCount"] == 1
    td = aws("ecs").describe_task_definition(taskDefinition=green["taskDefinition"])["taskDefinition"]
    container = td["containerDefinitions"][0]
    assert container["image"] == IMAGE_V2 and td["family"] == "shop-api"
    assert container["secrets"] == [{"name": "DATABASE_URL", "valueFrom": "/shop/DATABASE_URL"}]
    assert "u:secret@db" not in json.dumps(td)  # the value never enters the task definition
    assert td["executionRoleArn"].endswith(":role/shop-exec")
    # The migration ran as a one-off task with the release's image and stopped with exit code 0.
    arns = aws("ecs").list_tasks(cluster="shop", startedBy="platform-deploy")["taskArns"]
    (task,) = aws("ecs").describe_tasks(cluster="shop", tasks=arns)["tasks"]
    assert task["lastStatus"] == "STOPPED" and task["taskDefinitionArn"] == green["taskDefinition"]
    assert task["overrides"]["containerOverrides"][0]["command"] == ["/app/manage", "migrate_schemas"]
    lines = list(
        DeploymentLogLine.objects.filter(step__deployment=deployment, step__name="migrate").values_list(
            "text", flat=True
        )
    )
    assert lines[-1] == "migration task: exit code 0" and "migration task: STOPPED" in lines
    target.refresh_from_db()
    assert target.live_release.version == "2.0.0" and target.live_color == "green"


def test_unhealthy_green_targets_roll_back_and_blue_keeps_the_listener(aws_target, aws):
    target, infra = aws_target
    ec2 = aws("ec2")
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SubnetId=infra["subnets"][1])[
        "Instances"
    ][0]["InstanceId"]
    aws("elbv2").register_targets(TargetGroupArn=infra["groups"]["green"], Targets=[{"Id": instance}])
    ec2.stop_instances(InstanceIds=[instance])  # the new tasks' target never turns healthy
    before_green = service(aws, "api-green")
    deployment = deployment_run(
        deployment=deployment_create(environment="staging", version="2.0.0", actor=ACTOR), actor=ACTOR
    )
    assert deployment.status == Deployment.Status.ROLLED_BACK
    assert "Target group api green" in deployment.error and "unused" in deployment.error
    assert forward_of(aws, infra) == infra["groups"]["blue"]
    green = service(aws, "api-green")
    assert green["taskDefinition"] == before_green["taskDefinition"] and green["desiredCount"] == 0
    assert service(aws, "api-blue")["desiredCount"] == 1
    assert Target.objects.get(pk=target.pk).live_release is None


def test_rolling_updates_the_service_in_place(aws_target, aws):
    target, infra = aws_target
    Target.objects.filter(pk=target.pk).update(ecs_services={"api": "api"})
    deployment = deployment_run(
        deployment=deployment_create(environment="staging", version="2.0.0", strategy="rolling", actor=ACTOR),
        actor=ACTOR,
    )
    assert deployment.status == Deployment.Status.SUCCEEDED, deployment.error
    api = service(aws, "api")
    assert api["taskDefinition"].endswith("shop-api:2") and api["desiredCount"] == 1
    assert forward_of(aws, infra) == infra["groups"]["blue"]  # rolling leaves the listener alone


def test_aws_bad_configuration_is_refused_before_anything_changes(aws_target, aws, settings):
    target, infra = aws_target
    with pytest.raises(DeploymentValidationError, match="needs ecs_services.api = "):
        Target.objects.filter(pk=target.pk).update(ecs_services={"api": "api"})
        deployment_create(environment="staging", version="2.0.0", actor=ACTOR)
    Target.objects.filter(pk=target.pk).update(
        ecs_services={"api": {"blue": "api-blue", "green": "api-green"}}, execution_role_name="no-such-role"
    )
    with pytest.raises(DeploymentValidationError, match="IAM role 'no-such-role' does not exist"):
        deployment_create(environment="staging", version="2.0.0", actor=ACTOR)
    Target.objects.filter(pk=target.pk).update(execution_role_name="shop-exec")
    aws("ssm").delete_parameter(Name="/shop/DATABASE_URL")
    with pytest.raises(CommandError, match="Missing SSM parameters /shop/DATABASE_URL"):
        call_command("deploy_release", "2.0.0", "--env", "staging")
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TargetUnreachable, match="Cannot reach ECS in eu-west-1"):
        deployment_create(environment="staging", version="2.0.0", actor=ACTOR)
    assert not Deployment.objects.exists()
    assert aws("ecs").list_task_definitions(familyPrefix="shop-api")["taskDefinitionArns"] == [infra["td"]]


def test_rolling_service_that_never_stabilises_gets_its_previous_task_definition_back(aws_target, aws):
    target, infra = aws_target
    # Two tasks wanted, one running (the server's MOTO_ECS_SERVICE_RUNNING=1): never stable.
    aws("ecs").create_service(
        cluster="shop",
        serviceName="api-short",
        taskDefinition=infra["td"],
        desiredCount=2,
        launchType="FARGATE",
        networkConfiguration={
            "awsvpcConfiguration": {"subnets": infra["subnets"], "securityGroups": [infra["sg"]]}
        },
    )
    Target.objects.filter(pk=target.pk).update(ecs_services={"api": "api-short"})
    deployment = deployment_run(
        deployment=deployment_create(environment="staging", version="2.0.0", strategy="rolling", actor=ACTOR),
        actor=ACTOR,
    )
    assert deployment.status == Deployment.Status.ROLLED_BACK
    assert "api-short did not become stable within 3 s (1 of 2 tasks running" in deployment.error
    api = service(aws, "api-short")
    assert api["taskDefinition"] == infra["td"] and api["desiredCount"] == 2
    lines = DeploymentLogLine.objects.filter(step__deployment=deployment, step__name="automatic rollback")
    assert lines.filter(text__startswith="api-short: back to shop-api:1").exists()


def add_web_service(aws, infra) -> dict:
    """A second app service (the storefront) behind the same listener: default action -> web,
    a /api/* rule -> api; both on blue, as the seed's frontend and backend."""
    elb, ecs = aws("elbv2"), aws("ecs")
    vpc = aws("ec2").describe_subnets(SubnetIds=infra["subnets"])["Subnets"][0]["VpcId"]
    web = {
        c: elb.create_target_group(
            Name=f"shop-web-{c}", Protocol="HTTP", Port=3000, VpcId=vpc, TargetType="ip"
        )["TargetGroups"][0]["TargetGroupArn"]
        for c in ("blue", "green")
    }
    elb.modify_listener(
        ListenerArn=infra["listener"], DefaultActions=[{"Type": "forward", "TargetGroupArn": web["blue"]}]
    )
    rule = elb.create_rule(
        ListenerArn=infra["listener"],
        Priority=10,
        Conditions=[{"Field": "path-pattern", "Values": ["/api/*"]}],
        Actions=[{"Type": "forward", "TargetGroupArn": infra["groups"]["blue"]}],
    )["Rules"][0]["RuleArn"]
    td = ecs.register_task_definition(
        family="shop-web",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": "web", "image": IMAGE_V1.replace("api", "web"), "essential": True}],
    )["taskDefinition"]["taskDefinitionArn"]
    net = {"awsvpcConfiguration": {"subnets": infra["subnets"], "securityGroups": [infra["sg"]]}}
    create_blue_green_services(ecs, "web", td, net, web, port=3000, live_count=2)
    elb.register_targets(TargetGroupArn=web["blue"], Targets=[{"Id": "10.0.1.20", "Port": 3000}])
    return {"groups": web, "rule": rule}


def two_service_target(target, infra, web) -> None:
    services = stack()["services"] | {"web": {"role": "app", "port": 3000, "health_path": "/"}}
    Target.objects.filter(pk=target.pk).update(
        stack={**stack(), "services": services, "edge": {"routes": {"/": "web", "/api/": "api"}}},
        ecs_services={
            "api": {"blue": "api-blue", "green": "api-green"},
            "web": {"blue": "web-blue", "green": "web-green"},
        },
        target_groups={"api": infra["groups"], "web": web["groups"]},
    )
    Release.objects.filter(version="2.0.0").delete()
    release_create(
        version="2.0.0", images={"api": IMAGE_V2, "web": IMAGE_V2.replace("api", "web")}, actor=ACTOR
    )


def rule_forward(aws, rule) -> str:
    (found,) = aws("elbv2").describe_rules(RuleArns=[rule])["Rules"]
    return found["Actions"][0]["TargetGroupArn"]


def test_blue_green_with_two_app_services_shifts_the_default_action_and_the_rule(aws_target, aws):
    target, infra = aws_target
    web = add_web_service(aws, infra)
    two_service_target(target, infra, web)
    elb = aws("elbv2")
    elb.register_targets(TargetGroupArn=infra["groups"]["green"], Targets=[{"Id": "10.0.2.10", "Port": 8080}])
    elb.register_targets(TargetGroupArn=web["groups"]["green"], Targets=[{"Id": "10.0.2.20", "Port": 3000}])

    deployment = deployment_run(
        deployment=deployment_create(environment="staging", version="2.0.0", actor=ACTOR), actor=ACTOR
    )
    assert deployment.status == Deployment.Status.SUCCEEDED, deployment.error
    assert forward_of(aws, infra) == web["groups"]["green"]
    assert rule_forward(aws, web["rule"]) == infra["groups"]["green"]
    # Each green service got its blue twin's task count and its own new revision; blue is at zero.
    assert service(aws, "web-green")["desiredCount"] == 2 and service(aws, "api-green")["desiredCount"] == 1
    assert service(aws, "web-blue")["desiredCount"] == 0 and service(aws, "api-blue")["desiredCount"] == 0
    web_td = aws("ecs").describe_task_definition(taskDefinition=service(aws, "web-green")["taskDefinition"])
    assert web_td["taskDefinition"]["containerDefinitions"][0]["image"] == IMAGE_V2.replace("api", "web")
    assert Target.objects.get(pk=target.pk).live_color == "green"


def test_two_service_blue_green_failure_puts_back_the_default_action_and_the_rule(aws_target, aws):
    target, infra = aws_target
    web = add_web_service(aws, infra)
    two_service_target(target, infra, web)
    # The web tasks come up healthy, the api's never do: nothing may stay shifted.
    aws("elbv2").register_targets(
        TargetGroupArn=web["groups"]["green"], Targets=[{"Id": "10.0.2.20", "Port": 3000}]
    )
    deployment = deployment_run(
        deployment=deployment_create(environment="staging", version="2.0.0", actor=ACTOR), actor=ACTOR
    )
    assert deployment.status == Deployment.Status.ROLLED_BACK
    assert "Target group api green" in deployment.error
    assert forward_of(aws, infra) == web["groups"]["blue"]
    assert rule_forward(aws, web["rule"]) == infra["groups"]["blue"]
    assert service(aws, "web-green")["desiredCount"] == 0 and service(aws, "web-blue")["desiredCount"] == 2


def test_listener_with_services_on_different_colours_is_refused_before_anything_changes(aws_target, aws):
    target, infra = aws_target
    web = add_web_service(aws, infra)
    two_service_target(target, infra, web)
    aws("elbv2").modify_rule(
        RuleArn=web["rule"], Actions=[{"Type": "forward", "TargetGroupArn": infra["groups"]["green"]}]
    )
    with pytest.raises(DeploymentValidationError, match=r"different colours \(api: green, web: blue\)"):
        deployment_create(environment="staging", version="2.0.0", actor=ACTOR)
    # A flat pair cannot serve two app services.
    Target.objects.filter(pk=target.pk).update(target_groups=infra["groups"])
    with pytest.raises(DeploymentValidationError, match="one pair per service"):
        deployment_create(environment="staging", version="2.0.0", actor=ACTOR)
    assert not Deployment.objects.exists()
    assert service(aws, "web-green")["desiredCount"] == 0


def test_undo_after_the_shift_restores_every_forward_it_moved(aws_target, aws):
    """A failure after the listener moved (drain, scale-down) puts the default action and the rule back."""
    target, infra = aws_target
    web = add_web_service(aws, infra)
    two_service_target(target, infra, web)
    # A rule the deployer does not own (a redirect) is left alone.
    other = aws("elbv2").create_rule(
        ListenerArn=infra["listener"],
        Priority=5,
        Conditions=[{"Field": "path-pattern", "Values": ["/old-shop/*"]}],
        Actions=[{"Type": "redirect", "RedirectConfig": {"Path": "/", "StatusCode": "HTTP_301"}}],
    )["Rules"][0]["RuleArn"]
    engine = AwsEngine(Target.objects.get(pk=target.pk))
    engine.shift_listener("blue", "green")
    assert forward_of(aws, infra) == web["groups"]["green"]
    assert rule_forward(aws, web["rule"]) == infra["groups"]["green"]
    assert set(engine.listener_before) == {None, web["rule"]}
    engine.undo()
    assert forward_of(aws, infra) == web["groups"]["blue"]
    assert rule_forward(aws, web["rule"]) == infra["groups"]["blue"]
    (redirect,) = aws("elbv2").describe_rules(RuleArns=[other])["Rules"]
    assert redirect["Actions"][0]["Type"] == "redirect"


def test_store_secret_is_written_to_ssm_and_referenced_by_the_task_definition(aws_target, aws, capsys):
    target, infra = aws_target
    environment_secret_set(
        environment=target.environment, name="APP_API_KEY", value="store-only-api-key", actor=ACTOR
    )
    target.stack["services"]["api"]["secrets"]["API_KEY"] = "APP_API_KEY"
    target.ecs_services = {"api": "api"}
    target.save()
    call_command("deploy_release", "2.0.0", "--env", "staging", "--strategy", "rolling", "--plan-only")
    out = capsys.readouterr().out
    assert json.loads(out)["store_secrets"] == ["/shop/APP_API_KEY"] and "store-only-api-key" not in out
    assert not aws("ssm").describe_parameters(
        ParameterFilters=[{"Key": "Name", "Values": ["/shop/APP_API_KEY"]}]
    )["Parameters"]  # the plan wrote nothing
    deployment = deployment_run(
        deployment=deployment_create(environment="staging", version="2.0.0", strategy="rolling", actor=ACTOR),
        actor=ACTOR,
    )
    assert deployment.status == Deployment.Status.SUCCEEDED, deployment.error
    stored = aws("ssm").get_parameter(Name="/shop/APP_API_KEY", WithDecryption=True)["Parameter"]
    assert stored["Value"] == "store-only-api-key" and stored["Type"] == "SecureString"
    td = aws("ecs").describe_task_definition(taskDefinition=service(aws, "api")["taskDefinition"])
    container = td["taskDefinition"]["containerDefinitions"][0]
    assert {"name": "API_KEY", "valueFrom": "/shop/APP_API_KEY"} in container["secrets"]
    assert "store-only-api-key" not in json.dumps(td, default=str)
    assert not DeploymentLogLine.objects.filter(text__contains="store-only-api-key").exists()
    assert DeploymentLogLine.objects.filter(step__name="secrets", text__contains="/shop/APP_API_KEY").exists()
