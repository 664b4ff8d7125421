"""Entry points: the command line, the HTTP app and its webhooks."""
