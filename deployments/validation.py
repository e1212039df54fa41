"""Parsing of operator input: versions and image references."""

import re

from deployments.errors import DeploymentValidationError

# semver.org's own regular expression.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
# The grammar of distribution/reference: [domain[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d+)?)"
)
IMAGE_REF = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
GIT_SHA = re.compile(r"^[0-9a-f]{7,40}$")


def version_normalise(version: str) -> str:
    version = (version or "").strip()
    if version.startswith("v") and SEMVER.match(version[1:]):
        version = version[1:]
    if not SEMVER.match(version):
        raise DeploymentValidationError(
            f"{version!r} is not a semantic version; use MAJOR.MINOR.PATCH such as 1.4.0 or 2.0.0-rc.1."
        )
    return version


def image_ref_parse(service: str, ref: str) -> dict[str, str | None]:
    ref = (ref or "").strip()
    match = IMAGE_REF.match(ref)
    # A bare "domain/" prefix is only a domain when it has a dot, a port or is localhost.
    if not match:
        raise DeploymentValidationError(
            f"Image for service {service!r} ({ref!r}) is not a valid image reference; "
            "write it as registry/name:tag or registry/name@sha256:<64 hex digits>."
        )
    if not match["tag"] and not match["digest"]:
        raise DeploymentValidationError(
            f"Image for service {service!r} ({ref!r}) has neither a tag nor a digest; "
            "pin it (name:1.4.0 or name@sha256:...) so a deploy is repeatable."
        )
    return match.groupdict()

