# Control row for the student's pooled part cross entropy (model.part_pool):
# the + SPPN + LHM row pooling its last stage once over the location heatmap's
# object mask instead of at its top-3 proposals (in training and in the
# prediction). If it scores as well, the proposals add nothing to the object
# region the heatmap already finds. The SPPN still trains, and its sampled
# anchors still train the pooled cross entropy (part_pool.samples); its
# proposals go unused.
_base_ = ['./r18_sppn_lhm_synthetic.py']

model = dict(part_pool=dict(boxes='object'))
