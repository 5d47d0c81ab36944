"""The shipped configuration (installed as engine.config_data): profiles and table definitions."""
