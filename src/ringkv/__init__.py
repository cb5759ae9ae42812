"""ringkv: a Dynamo-style distributed key-value store with its own LSM storage engine."""

__version__ = "0.1.0"
