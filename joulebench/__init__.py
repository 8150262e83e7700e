"""joulebench: what LLM serving costs in energy, online and offline."""

__version__ = "0.1.0"
