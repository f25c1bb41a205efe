"""How the daemon meets the world: HTTP and /metrics, the control socket, watchdogctl, sd_notify, the textfile."""
