"""The rule for resource names, apart from the models so the CLI can check it without pydantic."""

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 63
