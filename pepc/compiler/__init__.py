"""Stage 3, the compiler: Policy + Config -> Program, and everything made
from a Program before it reaches a kernel.

Takes: a `Policy` and `Config` (pepc.policy), a time, and optionally the
live slot assignments (so a kept rule keeps its slot and its counters).
Gives: a `Program`: masks, hash entries and slots exactly as one data-plane
generation holds them (core.py, program.py); the one binary layout every
map and struct comes from (layout.py, packed by pack.py); the generated C
header (codegen.py) and plan.json (plan.py); the derived prefilter and
direct tables (bloom.py, direct.py); the XDP object (objbuild.py, or a
prebuilt one: prebuilt.py); `capacity_findings` for the checker.
Start with: core.py, then layout.py.
"""

from pepc.compiler.core import Assignments, IncrementalCompiler, RuleStats, capacity_findings, compile_program, rule_stats

__all__ = ["Assignments", "IncrementalCompiler", "RuleStats", "capacity_findings", "compile_program", "rule_stats"]
