"""Stack configuration: pydantic models, validated before any resource is declared."""

from config.errors import ConfigError
from config.loader import load_platform_config
from config.models import PlatformConfig

__all__ = ["ConfigError", "PlatformConfig", "load_platform_config"]
