"""Launch helpers for tools/: CPU-friendly distributed setup, safe checkpoint loading,
early dataset path checks."""
from .checkpoint_io import (CheckpointReadError, allow_mmengine_checkpoint_globals, atomic_write,
                            check_resume_checkpoint, mmengine_checkpoint_globals, safe_load)
from .cfg_options import check_checkpoint_variable, merge_cfg_options
from .data_check import check_data_paths
from .pretrained_check import (PretrainedMismatchError, StrictPretrainedHook, check_pretrained,
                               pretrained_init_cfgs)
from .launch import (close_process_group, cpu_model_wrapper_cfg, init_cpu_process_group,
                     replace_cuda_sync_bn, setup_launcher)

# Importing hgkd_mm (custom_imports) makes mmengine's checkpoints loadable with
# torch.load(weights_only=True) in the Runner's process.
allow_mmengine_checkpoint_globals()

__all__ = [
    'allow_mmengine_checkpoint_globals', 'mmengine_checkpoint_globals', 'safe_load',
    'CheckpointReadError', 'atomic_write', 'check_resume_checkpoint',
    'check_checkpoint_variable', 'check_data_paths', 'merge_cfg_options',
    'PretrainedMismatchError', 'StrictPretrainedHook', 'check_pretrained', 'pretrained_init_cfgs',
    'close_process_group', 'cpu_model_wrapper_cfg', 'init_cpu_process_group',
    'replace_cuda_sync_bn', 'setup_launcher'
]
