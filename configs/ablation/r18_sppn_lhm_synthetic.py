# Small twin of r50_sppn_lhm_cub.py: the ResNet-18 student net.
_base_ = ['../daf_r18_synthetic.py']

model = dict(teacher=None, distill=None, fusion_head=None,
             # The full image alone predicts: with the mean of the image's
             # and the top-3 part images' logits (NTS-Net's combination,
             # predict_part_top_m=3, as the R50 CUB twin keeps) the + SPPN +
             # LHM row scored 51.2 +- 1.0 on the validation set against
             # 59.2 +- 0.6 from the image alone (baseline 58.8 +- 1.4; 3
             # seeds, docs/benchmarks.md).
             predict_part_top_m=0)
