"""Translation between what clients speak and what upstreams speak, through one neutral model.

Used only when a call's client dialect and its model's provider differ; an
OpenAI client calling an OpenAI-compatible upstream (and an Anthropic client
calling Anthropic) is relayed as it is, never translated.
"""
