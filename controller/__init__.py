"""Automated rollback controller for Google Cloud Run.

The package is split into a pure decision core (incident, alert, policy, decide, ledger,
state, stats, canary) that never touches the network or the clock, and thin adapters
(cloudrun, monitoring, slack) behind typed interfaces, wired together by engine.
"""

__version__ = "0.1.0"
