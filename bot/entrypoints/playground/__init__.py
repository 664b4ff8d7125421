"""The local Slack playground: a stand-in workspace for trying Greenlight without Slack.

With no Slack settings, `serve` also serves `/playground`, a page that plays the
part of a workspace. It drives the real Greenlight through its real paths: the page's
commands and clicks become requests signed with a secret made at start and posted to
`/slack/events` (the same verification, replay guard and listeners as in HTTP mode),
and the bot's Web API calls (`chat.postMessage`, `chat.update`, response URLs, the
digest chart's upload) are answered here and pushed to the page as they come.

Because it can act as anyone, it exists only while Slack is not connected, and it
answers requests from the loopback address only (`routes.loopback_only`).
"""
