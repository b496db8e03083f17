"""Stage 0, what every stage speaks: the policy IR, its matching semantics,
the host settings, and the one shape of a problem report.

Takes: nothing from pepc (it imports no other stage).
Gives: `Policy`/`Rule` and the value types (model.py), `atoms_of`,
`specificity`, `rank_key` and the exact match test (semantics.py), `Config`
and `Capacities` (config.py), `Finding`, `PolicyError`, the finding codes
and exit codes (diagnostics.py); small shared helpers: where the shipped
data files are (resources.py), how a location is shown (sources.py), the
cyclic GC held off around bulk work (gcpause.py).
Start with: model.py, then semantics.py (docs/semantics.md, as code).
"""
