"""The traffic side: traces, arrival processes, SSE parsing, request records, the mock OpenAI server."""
