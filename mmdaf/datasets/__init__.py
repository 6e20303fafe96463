from .checks import check_config_datasets, check_dataset_cfg  # noqa: F401
from .synthetic_fgvc import (  # noqa: F401
    class_part_attributes,
    make_synthetic_fgvc,
    make_synthetic_generic,
)
from .synthetic_fgvc_dataset import (  # noqa: F401
    SyntheticFGVC,
    read_cub_class_names,
    read_part_box_rows,
)
from .transforms import LoadImageFromFileSafe  # noqa: F401
