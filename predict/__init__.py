"""Online energy predicted from a short saturated profile: the profile, a simulation of continuous batching
under arrivals, and the predictions with their intervals. Pure functions; I/O only in ``cli`` and ``runs``."""
