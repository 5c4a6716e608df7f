"""Errors raised by provisioning."""

from __future__ import annotations

from apigw_ws_core.errors import ApigwWsError, ConfigurationError

__all__ = ["ProvisionError", "SpecError"]


class SpecError(ConfigurationError):
    """The gateway spec or its config file is invalid; nothing was read or changed in AWS."""


class ProvisionError(ApigwWsError):
    """Reading or changing AWS resources failed.

    The message says which step failed and why. ``step`` names the change being made (empty
    when reading); when raised by ``apply`` the gateway record has already been saved with
    what exists, so running ``apply`` again resumes.
    """

    def __init__(self, message: str, *, step: str = "") -> None:
        self.step = step
        super().__init__(message)
