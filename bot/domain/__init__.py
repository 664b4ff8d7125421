"""Pure rules of Greenlight: no I/O, no database, no Slack. Everything else calls these."""
