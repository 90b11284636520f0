"""What both daemons share: lifecycle, TLS, logging and metrics, the HTTP server. No project imports."""
