"""PyTorch DDP (gloo) on the MLP and batch of benchmarks/dp_scaling.sh, for comparison (torch is not a
dependency: run it from a venv with torch==2.13.0). Launch one process per rank:
    for r in 0 1; do MASTER_ADDR=127.0.0.1 MASTER_PORT=29533 RANK=$r WORLD_SIZE=2 OMP_NUM_THREADS=1 \
        python benchmarks/torch_ddp.py 30 & done; wait
"""
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
from torch import nn

torch.set_num_threads(1)
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
dist.init_process_group("gloo", rank=rank, world_size=world)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
ddp = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
g = torch.Generator().manual_seed(rank)
x = torch.randn(256, 784, generator=g); y = torch.randint(0, 10, (256,), generator=g)
def step():
    opt.zero_grad()
    nn.functional.cross_entropy(ddp(x), y).backward()
    opt.step()

for _ in range(3): step()
dist.barrier(); t0 = time.perf_counter()
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
for _ in range(steps): step()
dist.barrier(); total = time.perf_counter() - t0
flat = torch.ones(7454760 // 4)
ts = []
for _ in range(23):
    dist.barrier(); t0 = time.perf_counter(); dist.all_reduce(flat); ts.append(time.perf_counter() - t0)
if rank == 0:
    print(json.dumps({"impl": "torch-ddp-gloo", "world_size": world, "step_ms": 1e3 * total / steps,
                      "samples_per_sec": world * 256 * steps / total,
                      "gloo_allreduce_ms": 1e3 * statistics.median(ts[3:])}))
dist.destroy_process_group()
