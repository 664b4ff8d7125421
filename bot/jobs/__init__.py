"""Scheduled work: the scheduler that ticks, the due work it wakes, and who runs it."""
