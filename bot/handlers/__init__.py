"""Slack listeners: named module-level callbacks, wired by `register`.

Listeners are thin: `ack()` first, then a use case in a worker thread (use cases use
the database synchronously), then a reply. The caller and their roles come from Bolt's
context (`deps.Caller`); the role is checked by the use case at the moment of the
action, never from the message that showed the button.
"""
