"""The engine at work: inbox, processor, dispatcher, loop, replay, warm-up, HTTP API, score client."""
