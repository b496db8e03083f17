"""The compiler: Policy + Config -> Program (see core.py)."""

from pepc.compiler.core import Assignments, RuleStats, compile_program, rule_stats

__all__ = ["Assignments", "RuleStats", "compile_program", "rule_stats"]
