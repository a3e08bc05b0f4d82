"""An env factory for the tests of `--env-factory`: the HIS env, counting how often it is built."""
from his_env import parallel_env

BUILT = []


def counting_env(config=None):
    BUILT.append(dict(config or {}))
    return parallel_env(config=config)


NOT_CALLABLE = 42
