"""Stage 5, what a policy change does to packets: the semantic diff.

Takes: two loaded policies (each with its default action) and a time.
Gives: a `PolicyDiff`: the regions of packet space decided differently
(verdict, action or deciding rule), merged back into rule-like boxes, and
the rule-level changes (semantic.py); its text, JSON and Markdown reports
for `pepc diff` (render.py).
Start with: semantic.py
"""
