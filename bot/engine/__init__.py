"""The engine: what turns queued sending logs into messages at the MTA.

The sender loop, the rendering of templates in a sandbox, the MIME skeleton of a
delivery, the signed tokens of its links, and the transports that relay (the
Transport port: SMTP, Maildir, and an in-memory fake).
"""
