"""Configuration parsing, the channel naming rule and policy, and the rate limiters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apigw_ws_core import ChannelPolicy, ChannelRule, Config, RateLimit
from apigw_ws_core.channels import (
    AUTHENTICATED,
    DENY,
    MAX_CHANNEL_LENGTH,
    OWNER,
    PUBLIC,
    default_policy,
    validate_channel,
)
from apigw_ws_core.errors import ConfigurationError, InvalidChannel, RateLimited
from apigw_ws_core.limits import MemoryRateLimiter, StorageRateLimiter
from apigw_ws_core.memory import MemoryStorage


def test_config_from_mapping_accepts_upper_and_lower_case():
    cfg = Config.from_mapping({"SECRET": "s", "token_ttl": 30, "ALLOWED_ORIGINS": "https://a.b"})
    assert cfg.secret == "s"
    assert cfg.token_ttl == 30
    assert cfg.allowed_origins == ("https://a.b",)


def test_config_rejects_unknown_keys_and_bad_limits():
    with pytest.raises(ConfigurationError, match="unknown apigw-ws setting 'SECRETT'"):
        Config.from_mapping({"SECRETT": "s"})
    with pytest.raises(ConfigurationError):
        Config.from_mapping({"message_rate_per_connection": "ten per second"})
    with pytest.raises(ConfigurationError):
        RateLimit.parse("0/10")


def test_secret_not_in_repr():
    assert "hunter2" not in repr(Config(secret="hunter2"))


@pytest.mark.parametrize(
    ("text", "expected"), [("5/10", (5, 10)), ("3/m", (3, 60)), ("1/h", (1, 3600)), ("2/s", (2, 1))]
)
def test_rate_limit_parse(text, expected):
    rl = RateLimit.parse(text)
    assert (rl.limit, rl.window) == expected


@pytest.mark.parametrize(
    "name", ["general", "room-1", "user.42", "a:b@c=d_e", "x" * MAX_CHANNEL_LENGTH]
)
def test_valid_channels(name):
    assert validate_channel(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "a b",
        "x" * (MAX_CHANNEL_LENGTH + 1),
        "é",
        "a/b",
        "a\nb",
        None,
        5,
        ["a"],
        "a%20b",
        "<script>",
    ],
)
def test_invalid_channels(name):
    with pytest.raises(InvalidChannel):
        validate_channel(name)


def test_policy_kinds():
    policy = ChannelPolicy(
        [
            ChannelRule("user.*", OWNER),
            ChannelRule("members-*", AUTHENTICATED),
            ChannelRule("closed", DENY),
            ChannelRule("open-*", PUBLIC),
        ]
    )
    assert policy.allows("3", "user.3") and not policy.allows("3", "user.4")
    assert not policy.allows(None, "user.None")
    assert policy.allows("1", "members-x") and not policy.allows(None, "members-x")
    assert not policy.allows("1", "closed")
    assert policy.allows(None, "open-1")
    assert not policy.allows("1", "unmatched")  # no rule: deny


def test_default_policy_private_needs_authorize():
    assert not default_policy().allows("1", "private-a")
    assert default_policy(lambda u, c: u == "1").allows("1", "private-a")
    assert not default_policy(lambda u, c: True).allows(None, "private-a")


@pytest.mark.parametrize("limiter", [MemoryRateLimiter(), StorageRateLimiter(MemoryStorage())])
def test_limiters_fixed_window(limiter):
    now = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    rate = RateLimit(2, 10)
    limiter.hit("k", rate, now)
    limiter.hit("k", rate, now)
    with pytest.raises(RateLimited) as exc:
        limiter.hit("k", rate, now)
    assert exc.value.retry_after == 6
    assert exc.value.headers == {"Retry-After": "6"}
    limiter.hit("k", rate, datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC))
    limiter.hit("other", rate, now)
    limiter.hit("k", None, now)


def test_memory_limiter_sweeps_ended_windows_only():
    limiter = MemoryRateLimiter(sweep_at=10)
    t0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    for i in range(11):
        limiter.incr(f"old-{i}", 10, t0)
    later = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    limiter.incr("live", 60, later)  # sweeps: the 11 ended windows go
    assert len(limiter._counts) == 1
    assert limiter.incr("live", 60, later) == 2  # the live window keeps counting
