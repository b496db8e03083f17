"""Stage 9, the service (`pepc watch`): reconcile on every change, report
on HTTP.

Takes: a policy directory and pepc.yaml; the reconciler (pepc.reconcile)
does the work.
Gives: one loop thread that owns every reconcile, woken by file events,
a resync period and retries (service.py, schedule.py: a pure state
machine); change notices (fs.py); the real backend over the loader and the
reconciler (backend.py); /metrics, /healthz, /readyz, /status (http.py,
metrics.py, live.py); LOG_ONLY events from the ring buffer (events.py).
Start with: service.py
"""
