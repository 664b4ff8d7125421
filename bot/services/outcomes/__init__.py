"""Use cases of what happens to messages: feedback, the bounce mailbox, unsubscribes, validity."""
