"""Stage 6, findings for people and tools, and the service's logs.

Takes: `Finding`s (pepc.policy.diagnostics) and where the policy lives.
Gives: text for a terminal, JSON for scripts, SARIF for code scanning and
GitHub annotations, with caps on what a reader can take (findings.py);
structured logging for the long-running commands (log.py).
Start with: findings.py
"""
