"""Both engines have the shape deployments.services drives them through."""

import pytest

from deployments.engines import Engine, engine_for
from deployments.engines.aws import AwsEngine
from deployments.engines.compose import ComposeEngine
from deployments.models import Target


@pytest.mark.parametrize("kind, cls", [(Target.Kind.COMPOSE, ComposeEngine), (Target.Kind.AWS, AwsEngine)])
def test_each_kind_gets_an_engine_with_the_protocol_and_nothing_touched(kind, cls):
    # Building an engine reaches nothing: no Docker Engine at this address, no AWS credentials.
    engine = engine_for(Target(name="t", kind=kind, docker_host="unix:///nonexistent.sock"))
    assert isinstance(engine, cls) and isinstance(engine, Engine)
    assert engine.touched is False
