"""What a DAF-net prediction puts on each data sample."""
from typing import Dict, List, Optional

import torch.nn.functional as F
from mmpretrain.structures import DataSample
from torch import Tensor


def set_prediction_fields(data_samples: Optional[List[DataSample]], logits: Tensor,
                          extras: Dict[str, Optional[Tensor]]) -> List[DataSample]:
    """Scores, labels, part boxes and heatmap of a batch on its data samples.

    Args:
        data_samples (list[DataSample], optional): one per image; new ones
            are made when None.
        logits (Tensor): (B, K) logits of the prediction.
        extras (dict): ``student_logits`` (B, K), ``teacher_logits`` (B, K),
            ``part_boxes`` (B, N, 4), ``part_scores`` (B, N) and ``heatmap``
            (B, 1, h, w); any but the first may be None.

    Returns:
        list[DataSample]: with ``pred_score``, ``pred_label``,
        ``student_score`` and, where given, ``teacher_score``, ``part_boxes``,
        ``part_scores`` and ``heatmap``.
    """
    if data_samples is None:
        data_samples = [DataSample() for _ in range(logits.shape[0])]
    scores = F.softmax(logits.float(), dim=1)
    labels = scores.argmax(dim=1, keepdim=True)
    student_scores = F.softmax(extras['student_logits'].float(), dim=1)
    teacher_scores = None
    if extras['teacher_logits'] is not None:
        teacher_scores = F.softmax(extras['teacher_logits'].float(), dim=1)
    for index, sample in enumerate(data_samples):
        sample.set_pred_score(scores[index]).set_pred_label(labels[index])
        sample.set_field(student_scores[index], 'student_score', dtype=Tensor)
        if teacher_scores is not None:
            sample.set_field(teacher_scores[index], 'teacher_score', dtype=Tensor)
        if extras['part_boxes'] is not None:
            sample.set_field(extras['part_boxes'][index].detach(), 'part_boxes',
                             dtype=Tensor)
            sample.set_field(extras['part_scores'][index].detach(), 'part_scores',
                             dtype=Tensor)
        if extras['heatmap'] is not None:
            sample.set_field(extras['heatmap'][index].detach(), 'heatmap', dtype=Tensor)
    return data_samples
