"""Pass-through: a client calling an upstream that speaks its own protocol.

Nothing is translated: the body goes up as it came (the model id and the
credentials swapped), and the answer comes back event by event, read only as
far as the gateway must (is it well formed, where is the usage, is it done).
"""
