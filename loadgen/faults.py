"""The faults the mock server plays when asked (``mock_fault`` in a request, ``--fault`` for all).

Kept apart from ``loadgen.mock_server`` as ``options`` is from the locustfile: the CLI lists and checks
them without importing FastAPI, which every ``joulebench`` command would then pay for.
"""

#: Besides ``status:CODE``; ``loadgen.mock_server`` says what each does.
FAULTS = (
    "stall",
    "disconnect",
    "garbage",
    "not_object",
    "bad_usage",
    "deep_json",
    "short",
    "no_stream",
    "endless_line",
)


def check_fault(fault: str) -> bool:
    """Whether the mock server knows ``fault`` ("" is none)."""
    code = fault.removeprefix("status:")
    return fault in ("", *FAULTS) or (fault.startswith("status:") and code.isdigit() and 100 <= int(code) <= 599)
