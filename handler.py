"""AWS Lambda entry points.

* ``handler``: buffered invocations (API Gateway REST/HTTP APIs, ``sam local
  start-api``), through Mangum.
* Streamed invocations (function URLs with ``InvokeMode: RESPONSE_STREAM``)
  are served by ``aisix.lambda_runtime``, which replaces the runtime loop via
  ``AWS_LAMBDA_EXEC_WRAPPER`` and runs this same ``app``.

Both build the app once per process: the upstream client, the DynamoDB
client and the key cache live as long as the instance stays warm.
"""

from mangum import Mangum

from aisix.app import create_app

app = create_app()
handler = Mangum(app, lifespan="off")
