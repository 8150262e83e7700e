"""The experiments that drive the monitor, the server and the load generator: the online-vs-offline
comparison (its phases, window arithmetic, attribution, report) and the DVFS sweep."""
