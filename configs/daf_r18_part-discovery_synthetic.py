# The complete DAF-net with part discovery in place of the SPPN's ranking:
# one box per part found from the class labels (PartDiscoveryHead), so that
# the teacher's saliency mask covers several parts, not the tail alone.
# Why: docs/benchmarks.md#part-discovery-proposals-that-cover-several-parts
_base_ = ['./daf_r18_synthetic.py']

model = dict(
    # C3 alone: the FPN's top-down path put the whole image's class into
    # every cell, and the parts covered fewer parts (1.59 against 2.27).
    sppn_neck=dict(_delete_=True, _scope_='mmdet', type='FinestStageMapper',
                   in_channels=64, out_channels=32),
    sppn_head=dict(
        _delete_=True,
        _scope_='mmdet',
        type='PartDiscoveryHead',
        in_channels=32,
        num_classes=10,
        num_parts=4,
        # The synthetic parts are 12-15 px at 64 px.
        box_size=14),
)
