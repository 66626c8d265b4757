"""PLACEHOLDER while the section is being written (replaced before release)."""


def add_arguments(parser) -> None:
    pass


def run(args):
    raise NotImplementedError("section under construction")


def render(data) -> list[str]:
    return []
