import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), 'shared', 'data')
sys.path.insert(0, ROOT)
torch.set_num_threads(2)
