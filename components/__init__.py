"""ComponentResources of the platform: one per file, each named for what it provisions."""
