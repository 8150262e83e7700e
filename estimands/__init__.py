"""The measurement math: what joulebench estimates and how, as pure functions and frozen records.

No I/O, no servers, no other package of the project: records (``requests.jsonl`` rows), energy slices and
poll records in, figures out. ``compare`` (its analysis of a run directory), the Locust cockpit and
``joulebench replay`` all compute their figures here, one way:

- ``tokens``: when the engine worked on which tokens (prefill where the engine did it, decode at each chunk);
- ``windows``: the steady-state window of a replay, its steadiness test and its verdict;
- ``reference``: the saturated reference's steady part and its figures, the live premium;
- ``energy``: window energy, online J/token, the premiums and their definitions;
- ``prices``: what a prefill and a decode token cost at saturation, and the premium on the same work;
- ``uncertainty``: the GUM budget of each figure (type A over segments, type B terms);
- ``attribution``: the per-slice energy model and the energy attributed to requests;
- ``engine``: what the engine's own metrics say (prefill rate, requests in system, throttling);
- ``summary``: a replay's counts, tokens and latency percentiles;
- ``floor``: the physical floor of J/token from datasheet figures.
"""
