from . import algorithms, backbones, heads, necks, sparse, teachers  # noqa: F401
