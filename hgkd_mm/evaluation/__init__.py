"""Judging a pre-trained backbone: the fixed labelled split and the probes."""
