"""Where the tests find the project's files and the shared traces, from any test folder."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "traces"
LOCUSTFILE = ROOT / "loadgen" / "locustfile.py"  # a path, not an import: importing it monkey-patches with gevent
FAKE_GPU = Path(__file__).resolve().parent / "fake_gpu_joulebench.py"
