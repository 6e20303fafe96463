# Table 3's "+ SPPN + LHM" row on the synthetic set: the ResNet-18 student net
# alone (twin of r50_sppn_lhm_cub.py). Why: docs/benchmarks.md#why-the-defaults-are-what-they-are
_base_ = ['../daf_r18_synthetic.py']

model = dict(
    teacher=None, distill=None, fusion_head=None,
    # The image alone predicts: with the top-3 part images (NTS-Net) 51.2 vs 59.2.
    predict_part_top_m=0,
    # The head also classifies C5 pooled in the top-3 proposals and at the 8 sampled anchors.
    part_pool=dict(top_m=3, loss_weight=1.0, boxes='proposals', samples=True))
