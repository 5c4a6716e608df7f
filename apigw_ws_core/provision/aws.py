"""The AWS clients provisioning talks to, and small helpers around botocore errors.

boto3 is imported lazily (it is the ``[aws]`` extra), so importing the provision package
never requires it. Clients are passed around as :class:`AwsClients`; tests build one from a
``boto3.Session`` on which they registered botocore event hooks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from apigw_ws_core.provision.errors import ProvisionError

__all__ = [
    "NOT_FOUND_CODES",
    "AwsClients",
    "client_error",
    "error_code",
    "is_not_found",
    "paginate",
]

#: Error codes meaning "that resource does not exist" across the services we use.
NOT_FOUND_CODES = frozenset(
    {"NotFoundException", "ResourceNotFoundException", "NoSuchHostedZone", "404"}
)


def client_error() -> type[Exception]:
    """botocore's ``ClientError`` class (botocore ships no type information)."""
    cls: type[Exception] = importlib.import_module("botocore.exceptions").ClientError
    return cls


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError``, or ``""``."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def error_message(exc: BaseException) -> str:
    """The AWS error message of a ``ClientError``, else ``str(exc)``."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        message = response.get("Error", {}).get("Message")
        if message:
            return f"{error_code(exc)}: {message}"
    return str(exc)


def is_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``ClientError`` saying the resource does not exist."""
    return isinstance(exc, client_error()) and error_code(exc) in NOT_FOUND_CODES


def paginate(call: Callable[..., dict[str, Any]], key: str, **kwargs: Any) -> Iterator[Any]:
    """Yield every item of a ``NextToken``/``NextMarker``-paginated list call."""
    token: str | None = None
    while True:
        page = call(**kwargs, NextToken=token) if token else call(**kwargs)
        yield from page.get(key, [])
        token = page.get("NextToken")
        if not token:
            return


@attrs.frozen(kw_only=True)
class AwsClients:
    """botocore clients for API Gateway v2, ACM (in the API's region) and Route 53."""

    apigatewayv2: Any
    acm: Any
    route53: Any
    sts: Any
    region: str

    @classmethod
    def create(
        cls,
        *,
        session: Any = None,
        region: str | None = None,
        profile: str | None = None,
    ) -> AwsClients:
        """Build the clients from a ``boto3.Session`` (a new one when ``session`` is None).

        ``region`` wins over the session's region; one of them must be set.
        """
        if session is None:
            try:
                boto3 = importlib.import_module("boto3")
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ProvisionError(
                    "provisioning needs boto3: pip install 'apigw-ws[aws]'"
                ) from exc
            session = boto3.Session(profile_name=profile, region_name=region)
        region = region or session.region_name
        if not region:
            raise ProvisionError(
                "no AWS region: set 'region' in the config, pass --region or set AWS_REGION"
            )
        return cls(
            apigatewayv2=session.client("apigatewayv2", region_name=region),
            acm=session.client("acm", region_name=region),
            route53=session.client("route53"),
            sts=session.client("sts", region_name=region),
            region=region,
        )

    def account_id(self) -> str:
        """The AWS account id of the credentials in use."""
        return str(self.sts.get_caller_identity()["Account"])
