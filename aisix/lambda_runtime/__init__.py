"""A Lambda runtime for any ASGI app, with response streaming.

Lambda's managed Python runtime can only return a whole response; this package speaks
the runtime API itself, so function URL (and REST API STREAM mode) responses go out
chunk by chunk as the app produces them, while every other event is answered buffered,
exactly as Mangum would. Start it with `python -m aisix.lambda_runtime module:app`
(see `bootstrap`, the `AWS_LAMBDA_EXEC_WRAPPER` script) or call `run(app)`.

It knows nothing of the gateway: anything the app needs from Lambda is in the scope
(`aws.event`, `aws.context`, and `scope["extensions"]["aws.lambda"]` with the
`request_id` and the `deadline_ms` the app should finish by).
"""

from .loop import run

__all__ = ["run"]
