"""Use cases: one transaction each, taking a Context and the ports they talk through."""
