"""Messages people read in Slack, kept in step with the database through the Notifications port.

The database holds what a message must say; these use cases post it, or update it in
place, and record where it is, so a message that could not be sent is corrected later.
"""
