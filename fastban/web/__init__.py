"""fastban web: the operator's page and /metrics, a separate process that talks to the guard over its control socket."""
