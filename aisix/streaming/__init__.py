"""Streaming: the SSE codec and the relay that moves a stream's bytes to the client."""
