"""Fleet-wide budgets: a bound on how many hosts remediate at once, kept on a coordinator (etcd, Redis)."""
