# The complete DAF-net on CUB-200-2011 with part discovery in place of the
# paper's SPPN ranking: one box per part, found from the class labels by
# PartDiscoveryHead (no part annotations), so that the teacher's mask and
# L_con's part images are meant to cover several parts. Not trained on CUB
# here: what it does on the synthetic set is in docs/benchmarks.md
# ("Part discovery").
_base_ = ['./daf_r50_cub.py']

model = dict(
    # C3 alone (stride 8, 56 x 56 at 448), as on the synthetic set.
    sppn_neck=dict(_delete_=True, _scope_='mmdet', type='FinestStageMapper',
                   in_channels=512, out_channels=128),
    sppn_head=dict(
        _delete_=True,
        _scope_='mmdet',
        type='PartDiscoveryHead',
        in_channels=128,
        feat_channels=128,
        num_classes=200,
        num_parts=4,  # as the paper's N for birds
        # A bird at 448 spans about 200-450 px, its parts 50-225 px.
        box_size=96),
)
