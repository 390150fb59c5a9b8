"""What a zcraq process shows the outside world while it runs: Prometheus metrics and health probes
over HTTP (``metrics_port``), and systemd's readiness, status and watchdog (zcraq/notify.py).

One thread owns a process's sockets and its protocol core: its poll loop. Nothing here reads the
core from another thread. Instead, the loop *publishes a view*: every ``PUBLISH_INTERVAL`` it copies
the figures it wants to show into a new immutable object and assigns it to one attribute, which the
HTTP thread reads. Per-request figures (counts, errors, latencies) are kept by the loop in plain
tallies (requests.py) and copied into the same view, because prometheus_client's locked Counters and
Histograms cost the hot path several times more per request.

    requests.py     per-request tallies the loop keeps; the request's arrival time travels with it
    views.py        the published view and the loop's side of publishing it (and telling systemd)
    node.py         a node's view and its metrics
    coordinator.py  the coordinator's view and its metrics
    disk.py         the size of a directory, sampled at most every 10 s
    http.py         the HTTP server: /metrics, /healthz, /readyz; bounded, in a daemon thread
"""
