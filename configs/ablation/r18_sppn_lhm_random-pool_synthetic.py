# Control row for the student's pooled part cross entropy (model.part_pool):
# the + SPPN + LHM row with the pooling (in training and in the prediction) at
# random boxes of the proposals' sizes instead of at the proposals. If it
# scores as well, the gain does not come from where the SPPN looks. The
# sampled anchors still train the pooled cross entropy (part_pool.samples).
_base_ = ['./r18_sppn_lhm_synthetic.py']

model = dict(part_pool=dict(boxes='random'))
