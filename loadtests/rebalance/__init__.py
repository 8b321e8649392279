"""Rebalancing: which policy relieves node pressure with the fewest migrations, each on a fresh cluster twin.

- cli.py: `autonomic bench rebalance`; run.py: one run per policy (twin, real Prometheus, the controller in process);
  figures.py: pressure and migration figures; bound.py: the MILP lower bound on moves; report.py: the table, JSON
  and plot (shared with the demo);
- plan_time.py: how long one `plan()` cycle takes at 100 and 1,000 nodes (`python -m loadtests.rebalance.plan_time`);
- twin_scale.py: how long the cluster twin takes to build and serve 100 nodes x 3,000 VMs, as ratios to 20 x 600.
"""
