"""``bench/run``: watchdogd side by side with node_exporter and Monit, every figure from one run.

The package is split by job: ``provision`` (apt packages, the clean venv),
``processes`` (children we start and must stop), ``procstats`` and
``percentiles`` (pure maths over /proc and samples), ``steady`` (the three
daemons at rest), ``scrape`` (/metrics latency), ``reaction`` (condition to
fix), ``families`` (the per-family scale benchmarks), ``report`` (the table
and the targets) and ``cli`` (the order of it all and the cleanup).
"""
