"""Top-k accuracy of DAF-net's student and teacher streams."""
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS

STREAMS = ('student', 'teacher')


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percentage of rows whose label is among the ``k`` highest scores.

    Args:
        scores (Tensor): (M, K) class scores.
        labels (Tensor): (M,) ground-truth class indices.
        k (int): how many top classes count as a hit.

    Returns:
        float: accuracy in percent, in [0, 100].
    """
    if k > scores.shape[1]:
        raise ValueError(f'top-{k} accuracy needs at least {k} classes, the scores '
                         f'have {scores.shape[1]}')
    topk_labels = scores.topk(k, dim=1).indices
    hits = (topk_labels == labels.view(-1, 1)).any(dim=1)
    return hits.float().mean().item() * 100.0


@METRICS.register_module()
class StreamAccuracy(BaseMetric):
    """Accuracy of the student and teacher scores that ``DAFClassifier`` puts
    on each data sample (``student_score``, ``teacher_score``, (K,) each).

    Reports ``accuracy_student/top{k}`` and ``accuracy_teacher/top{k}`` in
    percent, like mmpretrain's ``Accuracy`` (which reports the fused
    ``pred_score`` as ``accuracy/top{k}``; use both in an evaluator list). A
    stream that no sample carries (e.g. the teacher in a student-only ablation)
    is skipped; a stream that only some samples carry is a ValueError.

    Results of all ranks are gathered by ``BaseMetric`` before the accuracy is
    computed, so distributed evaluation gives the single-process numbers.

    Args:
        topk (int | Sequence[int]): the k of top-k. Defaults to (1, ).
        collect_device (str): ``'cpu'`` or ``'gpu'``, see ``BaseMetric``.
        prefix (str, optional): prepended as ``prefix/`` to every key; default
            none, the keys are ``accuracy_<stream>/top<k>``.
    """
    default_prefix: Optional[str] = ''

    def __init__(self,
                 topk: Union[int, Sequence[int]] = (1, ),
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = (topk, ) if isinstance(topk, int) else tuple(topk)
        if not self.topk or any(not isinstance(k, int) or k < 1 for k in self.topk):
            raise ValueError(f'topk must be positive ints, got {topk!r}')

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep the label and the stream scores of each sample (on CPU)."""
        for sample in data_samples:
            result = {'gt_label': sample['gt_label'].cpu().view(-1)[:1]}
            for stream in STREAMS:
                key = f'{stream}_score'
                if key in sample:
                    result[key] = sample[key].cpu()
            self.results.append(result)

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """``{'accuracy_<stream>/top<k>': percent}`` for each present stream."""
        labels = torch.cat([result['gt_label'] for result in results])
        metrics = {}
        for stream in STREAMS:
            key = f'{stream}_score'
            num_with_stream = sum(key in result for result in results)
            if num_with_stream == 0:
                continue
            if num_with_stream != len(results):
                raise ValueError(f'StreamAccuracy: {key} is on {num_with_stream} of '
                                 f'{len(results)} samples; expected all or none')
            scores = torch.stack([result[key] for result in results]).float()
            for k in self.topk:
                metrics[f'accuracy_{stream}/top{k}'] = topk_accuracy(scores, labels, k)
        return metrics
