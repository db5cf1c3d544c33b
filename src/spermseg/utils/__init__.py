"""Small shared utilities: atomic writes, seeding, progress bars, device selection."""
