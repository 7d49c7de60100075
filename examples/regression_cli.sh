#!/usr/bin/env bash
# Linear and nonlinear regression from the command line (the seed posts' curve-fitting examples).
# Each prints per-epoch validation MSE/MAE/R^2 and the final test scores, and writes a checkpoint
# (--overwrite-checkpoint-dir: a rerun replaces the last run's checkpoints instead of refusing to start).
set -euo pipefail
PY=${PYTHON:-python}

# y = w.x + b + noise on 8 features: a linear model recovers it (test R^2 ~ 0.999)
$PY -m distbp.train --dataset regression --model linear --epochs 20 --lr 0.05 \
    --checkpoint-dir runs/linreg/ckpt --overwrite-checkpoint-dir --log-dir runs/linreg

# y = sin(x) + noise: a straight line cannot fit it (R^2 ~ 0.63) ...
$PY -m distbp.train --dataset sine --model linear --epochs 20 --lr 0.05 --checkpoint-dir runs/sine-linear/ckpt \
    --overwrite-checkpoint-dir

# ... a small tanh MLP can (test R^2 ~ 0.99)
$PY -m distbp.train --dataset sine --model mlp --hidden 32,32 --activation tanh --epochs 100 --lr 0.05 \
    --batch-size 32 --checkpoint-dir runs/sine-mlp/ckpt --overwrite-checkpoint-dir --log-dir runs/sine-mlp

# your own data: a CSV of numeric features with a fractional target column is a regression set
# $PY -m distbp.train --dataset my.csv --label-column price --model mlp --hidden 64
# curves (needs pip install 'distbp[plot]'):  $PY -m distbp.plot runs/sine-mlp
