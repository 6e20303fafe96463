# SPPN as an mmdet dense head on any FPN: top-N part boxes per image, no boxes
# needed for training. Build it in mmdet's scope.
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

import mmdaf  # noqa: F401  (registers SPPNHead in mmdet's MODELS)

init_default_scope('mmdet')
fpn = MODELS.build(
    dict(type='FPN', in_channels=[512, 1024, 2048], out_channels=256, num_outs=3))
sppn = MODELS.build(dict(type='SPPNHead', in_channels=256, num_parts=4, nms_iou_thr=0.25))

c3, c4, c5 = torch.randn(1, 512, 56, 56), torch.randn(1, 1024, 28, 28), torch.randn(
    1, 2048, 14, 14)
results = sppn.predict(fpn((c3, c4, c5)), [dict(img_shape=(448, 448))])
print(results[0].bboxes.shape, results[0].scores.shape)  # (4, 4) and (4,)
