"""Block Kit builders: pure functions from typed views to the messages Slack shows."""
