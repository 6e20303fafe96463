# Small twin of r50_sppn_cub.py: the + SPPN + LHM row without the location
# heatmap (its switches are explained in r18_sppn_lhm_synthetic.py). The SPPN
# then ranks anchors over the whole image and draws its sampled anchors there,
# and R_area's target is the image's area over N.
_base_ = ['./r18_sppn_lhm_synthetic.py']

model = dict(location_heatmap=None)
