"""Least-privilege IAM policies: what the running app needs, and what provisioning needs.

* :func:`runtime_policy` lets the app push to, inspect and close connections of one API
  stage (``execute-api:ManageConnections`` on ``POST``/``GET``/``DELETE @connections``).
* :func:`deploy_policy` allows exactly the API Gateway, ACM and Route 53 calls that
  ``apply``/``destroy`` make, scoped to the region, the API (once its id is known), the
  custom domain, its hosted zone and record names.

Both return plain dicts; ``json.dumps(policy, indent=2)`` prints them.
"""

from __future__ import annotations

from typing import Any

from apigw_ws_core.provision.spec import GatewaySpec

__all__ = ["deploy_policy", "runtime_policy"]

Policy = dict[str, Any]


def runtime_policy(region: str, account_id: str, api_id: str = "*", stage: str = "*") -> Policy:
    """The policy the app's runtime role needs to use the ``@connections`` API."""
    base = f"arn:aws:execute-api:{region}:{account_id}:{api_id}/{stage}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ApigwWsManageConnections",
                "Effect": "Allow",
                "Action": "execute-api:ManageConnections",
                "Resource": [
                    f"{base}/{method}/@connections/*" for method in ("POST", "GET", "DELETE")
                ],
            }
        ],
    }


def deploy_policy(
    spec: GatewaySpec,
    account_id: str,
    *,
    region: str | None = None,
    api_id: str | None = None,
    hosted_zone_id: str | None = None,
) -> Policy:
    """The policy of whoever runs ``apigw-ws provision`` for ``spec``.

    Without ``api_id`` (before the first apply) the API statements cover every API in the
    region, since API Gateway chooses the id; re-generate the policy with the id afterwards
    for a tighter one. Domain, certificate and DNS statements appear only when the spec
    has a custom domain.
    """
    region = region or spec.region or "*"
    gw = f"arn:aws:apigateway:{region}::"
    api = api_id or "*"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ApiGatewayListAndCreateApis",
            "Effect": "Allow",
            "Action": ["apigateway:GET", "apigateway:POST"],
            "Resource": [f"{gw}/apis"],
        },
        {
            "Sid": "ApiGatewayManageTheApi",
            "Effect": "Allow",
            "Action": [
                "apigateway:GET",
                "apigateway:POST",
                "apigateway:PATCH",
                "apigateway:DELETE",
            ],
            "Resource": [f"{gw}/apis/{api}", f"{gw}/apis/{api}/*"],
        },
        {
            "Sid": "ApiGatewayTagTheApi",
            "Effect": "Allow",
            "Action": ["apigateway:GET", "apigateway:POST", "apigateway:DELETE"],
            "Resource": [f"{gw}/tags/*"],
        },
    ]
    domain = spec.domain
    if domain is not None:
        statements.append(
            {
                "Sid": "ApiGatewayCustomDomain",
                "Effect": "Allow",
                "Action": [
                    "apigateway:GET",
                    "apigateway:POST",
                    "apigateway:PATCH",
                    "apigateway:DELETE",
                ],
                "Resource": [
                    f"{gw}/domainnames",
                    f"{gw}/domainnames/{domain.name}",
                    f"{gw}/domainnames/{domain.name}/*",
                ],
            }
        )
        if domain.request_certificate:
            acm_region = region
            statements += [
                {
                    "Sid": "AcmRequestCertificateForTheDomain",
                    "Effect": "Allow",
                    "Action": "acm:RequestCertificate",
                    "Resource": "*",
                    "Condition": {"ForAllValues:StringEquals": {"acm:DomainNames": [domain.name]}},
                },
                {
                    "Sid": "AcmManageCertificates",
                    "Effect": "Allow",
                    "Action": [
                        "acm:DescribeCertificate",
                        "acm:ListTagsForCertificate",
                        "acm:DeleteCertificate",
                        "acm:AddTagsToCertificate",
                    ],
                    "Resource": f"arn:aws:acm:{acm_region}:{account_id}:certificate/*",
                },
                {
                    "Sid": "AcmListCertificates",
                    "Effect": "Allow",
                    "Action": "acm:ListCertificates",
                    "Resource": "*",
                },
            ]
        if domain.manage_dns:
            zone = hosted_zone_id or domain.hosted_zone_id or "*"
            statements += [
                {
                    "Sid": "Route53FindZone",
                    "Effect": "Allow",
                    "Action": ["route53:ListHostedZonesByName", "route53:GetChange"],
                    "Resource": "*",
                },
                {
                    "Sid": "Route53ReadZone",
                    "Effect": "Allow",
                    "Action": "route53:ListResourceRecordSets",
                    "Resource": f"arn:aws:route53:::hostedzone/{zone}",
                },
                {
                    "Sid": "Route53WriteDomainRecords",
                    "Effect": "Allow",
                    "Action": "route53:ChangeResourceRecordSets",
                    "Resource": f"arn:aws:route53:::hostedzone/{zone}",
                    "Condition": {
                        "ForAllValues:StringLike": {
                            "route53:ChangeResourceRecordSetsNormalizedRecordNames": [
                                domain.name,
                                f"*.{domain.name}",
                            ]
                        },
                        "ForAllValues:StringEquals": {
                            "route53:ChangeResourceRecordSetsRecordTypes": ["A", "CNAME"]
                        },
                    },
                },
            ]
    return {"Version": "2012-10-17", "Statement": statements}
