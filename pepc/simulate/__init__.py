"""Stage 4, packets through a compiled policy: what the XDP program decides,
computed in Python from the same map bytes.

Takes: a `Program` (pepc.compiler) and packets, written as text
(`tcp 10.0.0.2:1234 > 10.0.0.1:80`) or as Ethernet frames.
Gives: a `Decision` per packet and an `Explanation` (every matching rule and
why the winner wins) for `pepc simulate` (evaluate.py); frames built and
parsed exactly as the XDP program parses them (frames.py); policy unit tests
with expected outcomes, `pepc test` (policytest.py). The kernel tests hold
evaluate.py to the real program under BPF_PROG_TEST_RUN.
Start with: evaluate.py
"""
