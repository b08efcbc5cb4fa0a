"""Every error type the gateway reports to Lambda is one Lambda records (not ``Function.Unknown``)."""

from __future__ import annotations

import re

import pytest

from aisix.errors import GatewayError
from aisix.streaming.relay import lambda_error_trailers, lambda_error_type

# Spelled here, from AWS's runtime interface emulator, not imported from the code under test.
LAMBDA_ERROR_TYPE = re.compile(r"(Runtime|Function)\.[A-Z][a-zA-Z]+")


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (502, "upstream_error", "Function.UpstreamError"),
        (504, "upstream_timeout", "Function.UpstreamTimeout"),
        (502, "429", "Function.UpstreamRateLimited"),  # an upstream's numeric code, common on compatible servers
        (429, "rate-limit.exceeded", "Function.RateLimitExceeded"),
        (502, "500", "Function.InternalError"),
        (502, "e42", "Function.UpstreamError"),
        (502, None, "Function.UpstreamError"),
        (400, "", "Function.StreamError"),
    ],
)
def test_error_types_match_lambdas_pattern(status, code, expected):
    kind = lambda_error_type(GatewayError(status, "boom", code=code))
    assert kind == expected
    assert LAMBDA_ERROR_TYPE.fullmatch(kind)


def test_the_trailers_stay_small_whatever_the_message():
    trailers = dict(lambda_error_trailers(GatewayError(502, "x" * 100_000, code="upstream_error")))
    assert sum(len(k) + len(v) for k, v in trailers.items()) < 4096
