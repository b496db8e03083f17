"""The compiler: Policy + Config -> Program (see core.py)."""

from pepc.compiler.core import Assignments, IncrementalCompiler, RuleStats, compile_program, rule_stats

__all__ = ["Assignments", "IncrementalCompiler", "RuleStats", "compile_program", "rule_stats"]
