"""The in-cluster receiver: forward-protocol server, sinks, store, HTTP API, kubectl plugin."""
