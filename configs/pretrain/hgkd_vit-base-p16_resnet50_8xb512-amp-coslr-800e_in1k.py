# The paper-scale recipe under its OpenMMLab name.
_base_ = './hgkd_r50.py'
