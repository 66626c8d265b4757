"""Text from package registries and locally generated long-context tasks."""
