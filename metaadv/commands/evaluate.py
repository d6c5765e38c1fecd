"""``metaadv evaluate``: placeholder until the evaluation module lands."""


def add_parser(sub):
    return sub.add_parser("evaluate", help="robust evaluation of a checkpoint")


def run(args):
    raise NotImplementedError
