"""Data: built-in datasets, MNIST IDX and CSV loaders, and rank-independent batching."""
from .datasets import BUILTINS, Dataset, load_dataset, split_indices
from .errors import DataError
from .idx import read_idx, write_idx
from .loader import epoch_permutation, global_batches, num_batches, shard, shard_bounds
from .tabular import load_csv

__all__ = ["BUILTINS", "DataError", "Dataset", "epoch_permutation", "global_batches", "load_csv", "load_dataset",
           "num_batches", "read_idx", "shard", "shard_bounds", "split_indices", "write_idx"]
