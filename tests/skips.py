"""Skips, and what CI makes of them.

A test may skip for two kinds of reasons, and CI must tell them apart:
- the HOST cannot do it (no usable hypervisor, no nested KVM): a fact about the machine, which no install step
  can change. That stays a skip everywhere: `host_cannot(reason)`.
- a TOOL the project installs itself (scripts/tools/*.sh: kustomize, flux, the control plane, podman, Chromium,
  libfaketime...) is missing. On a laptop that is a skip naming the script to run: `tool_missing(reason)`.
  Under CI=true it is a failure: the install step broke, and a green run would hide it.

tests/conftest.py applies the same rule to skips raised elsewhere (skipif markers, importorskip, fixtures of other
suites): under CI=true a skip whose reason names a scripts/tools/ installer fails.
"""
import os

import pytest

INSTALLER_HINT = "scripts/tools/"
HOST_PREFIX = "host cannot: "


def in_ci() -> bool:
    """CI=true, as GitHub Actions and the project's CI set it."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def is_tool_missing(reason: str) -> bool:
    """A skip reason that blames a missing tool the project installs (it names the installer script)."""
    return INSTALLER_HINT in reason and not reason.startswith(HOST_PREFIX)


def ci_failure_message(reason: str) -> str:
    return (f"CI=true: a tool the project installs is missing, which is an install failure, not a skip: {reason}")


def tool_missing(reason: str, installer: str) -> None:
    """Skip (or, under CI=true, fail) because a tool that INSTALLER (scripts/tools/NAME.sh) provides is missing."""
    reason = f"{reason} (run: bash {INSTALLER_HINT}{installer})"
    if in_ci():
        pytest.fail(ci_failure_message(reason), pytrace=False)
    pytest.skip(reason)


def host_cannot(reason: str) -> None:
    """Skip, in CI too: the machine itself cannot run this (say, no usable hypervisor)."""
    pytest.skip(HOST_PREFIX + reason)
