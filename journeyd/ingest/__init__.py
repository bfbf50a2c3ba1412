"""How events reach the engine: the Unix socket, the Segment-compatible HTTP API, and the
bounded queue both feed."""
