"""Use cases of recurring deliveries: their occurrences and approvals."""
