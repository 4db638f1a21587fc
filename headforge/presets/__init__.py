"""Training presets shipped as package data: ``<gaussians|fields>_<name>.toml``, read by ``headforge.config_io``."""
