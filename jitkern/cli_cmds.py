"""warmup / cache / doctor subcommands (filled in by the runtime work)."""


def add_commands(sub):
    return None
