"""How long a call may still take before the platform cuts it off (Lambda), less a margin.

Two ways a request can carry its deadline: the AISIX Lambda runtime puts the
invocation's ``deadline_ms`` in the ``aws.lambda`` scope extension (streamed
and buffered events alike); Mangum (``handler.handler``, ``sam local``) puts
the Lambda context in ``scope["aws.context"]``. Elsewhere there is none.
"""

from __future__ import annotations

import math
import time
from typing import Any


def seconds_left(scope: dict[str, Any], margin: float) -> float:
    """Seconds until the deadline less ``margin`` (never negative); infinity where there is none."""
    lambda_ext = (scope.get("extensions") or {}).get("aws.lambda")
    if lambda_ext and lambda_ext.get("deadline_ms"):
        left = lambda_ext["deadline_ms"] / 1000 - time.time()
    else:
        context = scope.get("aws.context")
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return math.inf
        left = remaining() / 1000
    return max(0.0, left - margin)
