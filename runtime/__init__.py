"""How a stage runs as a process: option resolution (flag, environment, TOML file, default),
the pipeline's own metrics and health endpoints, shared settings and terminal-safe text.
Nothing here is exchanged through Kafka (that is `contracts`)."""
