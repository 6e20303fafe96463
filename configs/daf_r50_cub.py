# The complete DAF-net (paper Table 3, last row) on CUB-200-2011 at 448:
# N=4 parts per bird (the paper's choice), M=3 parts in the concentrate loss.
_base_ = [
    './_base_/models/daf_r50.py',
    './_base_/datasets/cub.py',
    './_base_/schedules/fgvc_sgd_100e.py',
    './_base_/default_runtime.py',
]
