"""An HTTPS RFC 8030 push-service simulator that checks what a strict push service checks.

See README.md. Public API: `PushSimulator`, `PushMessage`, `SimulatorError`, `token_of`.
"""

from benchmarks.pushsim.client import PushMessage, PushSimulator, SimulatorError, token_of

__all__ = ["PushMessage", "PushSimulator", "SimulatorError", "token_of"]
