"""Settings: TOML files for demo, kiosk and test, and their one validating loader."""

from config.loader import Config, ConfigError, load, validate

__all__ = ["Config", "ConfigError", "load", "validate"]
