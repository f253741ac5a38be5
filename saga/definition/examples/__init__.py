"""Example definitions, each given both with the builder and as YAML."""
