"""`studio reward`: the reward-model workbench (being written)."""


def configure(sub) -> None:
    pass
