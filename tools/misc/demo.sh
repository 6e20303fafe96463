#!/usr/bin/env bash
# Trains CONFIG on the synthetic data, evaluates the last checkpoint and says
# where everything went. Used by `make demo`.
set -euo pipefail
PYTHON=$1
CONFIG=$2
WORK_DIR=$3
DATA_ROOT=$4

"$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" \
    --cfg-options "train_dataloader.dataset.data_root=$DATA_ROOT" \
    "val_dataloader.dataset.data_root=$DATA_ROOT" "test_dataloader.dataset.data_root=$DATA_ROOT"
CHECKPOINT=$(cat "$WORK_DIR/last_checkpoint")
LOG_DIR=$(ls -d "$WORK_DIR"/20*_* | tail -n 1)
METRICS=$("$PYTHON" tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "$WORK_DIR" \
    --cfg-options "test_dataloader.dataset.data_root=$DATA_ROOT" | tail -n 1)
"$PYTHON" tools/misc/draw_test_parts.py "$CONFIG" "$CHECKPOINT" --data-root "$DATA_ROOT" \
    --out-dir "$WORK_DIR/part_pictures" --num-images 6 > "$WORK_DIR/part_pictures.log"
cat <<EOT

== mmdaf demo finished ==
config:      $CONFIG
data:        $DATA_ROOT (synthetic, CUB layout)
checkpoint:  $CHECKPOINT
logs:        $WORK_DIR (training log and scalars under $LOG_DIR)
test split:  $METRICS
pictures:    $WORK_DIR/part_pictures (heatmap and part boxes of 6 test images)
EOT
"$PYTHON" - "$METRICS" <<'EOPY'
import json, sys
metrics = json.loads(sys.argv[1])
names = [('fused', 'accuracy/top1'), ('student', 'accuracy_student/top1'),
         ('teacher', 'accuracy_teacher/top1')]
print('top-1 (%):   ' + '  '.join(f'{name} {metrics[key]:.2f}'
                                  for name, key in names if key in metrics))
EOPY
