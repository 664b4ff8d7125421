"""Use cases that read files: profiles (CSV) and deliveries (YAML)."""
