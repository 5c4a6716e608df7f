"""A chat Lambda in the style of the AWS SDK for Python examples' WebSocket chat.

Written for these tests (the public sample's code is not copied here); it relies on the same
facts the sample does, which are what matter to the local gateway:

* one function serves ``$connect``, ``$disconnect`` and the ``sendmessage`` route, switching
  on ``requestContext.routeKey``;
* the DynamoDB table name comes from the ``table_name`` environment variable, the table's
  key is ``connection_id``, and ``boto3.resource("dynamodb")`` is created without a region
  (Lambda always sets ``AWS_REGION``);
* ``$connect`` reads the user name from ``queryStringParameters["name"]``;
* the Management API client is built as ``https://{domainName}/{stage}`` from the request
  context, and a ``GoneException`` removes the connection from the table.
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
from botocore.exceptions import ClientError


def _table() -> Any:
    return boto3.resource("dynamodb").Table(os.environ["table_name"])


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Route on ``routeKey`` like the sample: connect, disconnect, sendmessage."""
    request = event.get("requestContext", {})
    route, connection_id = request.get("routeKey"), request.get("connectionId")
    table = _table()
    if route == "$connect":
        name = (event.get("queryStringParameters") or {}).get("name", "guest")
        table.put_item(Item={"connection_id": connection_id, "user_name": name})
        return {"statusCode": 200}
    if route == "$disconnect":
        table.delete_item(Key={"connection_id": connection_id})
        return {"statusCode": 200}
    if route != "sendmessage":
        return {"statusCode": 404}
    body = json.loads(event.get("body") or '{"msg": ""}')
    endpoint = f"https://{request['domainName']}/{request['stage']}"
    client = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint)
    sender = table.get_item(Key={"connection_id": connection_id}).get("Item", {})
    text = f"{sender.get('user_name', 'guest')}: {body['msg']}".encode()
    for item in table.scan(ProjectionExpression="connection_id")["Items"]:
        other = item["connection_id"]
        if other == connection_id:
            continue
        try:
            client.post_to_connection(ConnectionId=other, Data=text)
        except client.exceptions.GoneException:
            table.delete_item(Key={"connection_id": other})
        except ClientError:
            pass
    return {"statusCode": 200}
