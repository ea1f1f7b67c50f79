"""Config loading, schema and validation. Never imports TensorFlow."""

from kexp.config.loader import LoadedConfig, load_config, load_config_text

__all__ = ["LoadedConfig", "load_config", "load_config_text"]
