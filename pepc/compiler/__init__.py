"""The compiler: Policy + Config -> Program (see core.py)."""

from pepc.compiler.core import Assignments, IncrementalCompiler, RuleStats, capacity_findings, compile_program, rule_stats

__all__ = ["Assignments", "IncrementalCompiler", "RuleStats", "capacity_findings", "compile_program", "rule_stats"]
