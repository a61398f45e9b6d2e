"""Training strategies: how the loop drives the model (registry kind ``strategy``)."""
