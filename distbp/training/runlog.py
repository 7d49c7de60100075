"""What a training run shows and writes: lines on stdout, the progress bar and metrics.jsonl (rank 0).

Training records are held back until a log point (`flush`), where one allreduce turns the per-step
loss sums of every rank into each step's global mean loss; so a step's `loss` in metrics.jsonl is
exactly what one process would log for that step, without a blocking collective per step."""
from __future__ import annotations

import json
import os
import sys


class RunLog:
    """Every rank creates it and calls `flush` (a collective); only rank 0 prints and writes.

    An unwritable `log_dir` raises `error(message)` on every rank, so none waits in a collective."""

    def __init__(self, comm, log_dir: str, progress: bool, total: int, start: int, error=OSError):
        self.root = comm.is_root
        self.file = None
        failure = None
        if self.root and log_dir:
            try:
                os.makedirs(log_dir, exist_ok=True)
                # kept open for the whole run, closed in close()
                self.file = JsonLines(os.path.join(log_dir, "metrics.jsonl"))
            except OSError as e:
                failure = f"cannot write the metrics log in --log-dir {log_dir}: {e.strerror or e}"
        failure = comm.bcast_obj(failure)
        if failure:
            raise error(failure)
        self.error = error
        self.bar = None
        if self.root and progress and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, leave=False)
        self._pending = []           # (record without its loss, StepResult) since the last flush
        self._logged_loss = None     # the latest flushed step's global mean loss
        self._epoch_loss = self._epoch_samples = 0.0
        self.history = None          # a list to receive every record too, on every rank (distbp.fit)

    def train_step(self, trainer, result, samples_per_s: float) -> None:
        """Note a finished step; the bar shows this rank's own loss at once (on one process: the loss).
        A rank that computes no loss (a pipeline stage before the last) shows the global mean loss of
        the latest logged step instead, as `logged_loss`, once there is one."""
        epoch = trainer.epoch + (trainer.position > 0)   # 1-based epoch of that step (the trainer may have rolled over)
        self._pending.append((trainer.global_step, epoch, samples_per_s, result))
        if self.bar is not None:
            self.bar.update(1)
            if result.samples:
                self.bar.set_postfix(loss=f"{result.local_loss:.4f}", samples_s=f"{samples_per_s:.0f}")
            elif self._logged_loss is not None:
                self.bar.set_postfix(logged_loss=f"{self._logged_loss:.4f}", samples_s=f"{samples_per_s:.0f}")
            else:
                self.bar.set_postfix(samples_s=f"{samples_per_s:.0f}")

    def flush(self, trainer) -> None:
        """Collective: reduce the held-back steps' losses (one allreduce) and write their records."""
        losses = trainer.mean_losses([result for *_, result in self._pending])
        for (step, epoch, rate, result), loss in zip(self._pending, losses):
            self.record(split="train", step=step, epoch=epoch, loss=loss, samples_per_s=rate)
            self._epoch_loss += loss * result.global_batch
            self._epoch_samples += result.global_batch
            self._logged_loss = loss
        self._pending = []

    def take_epoch_loss(self) -> float:
        """Mean training loss over the samples flushed since the last call (one epoch's)."""
        mean = self._epoch_loss / max(self._epoch_samples, 1)
        self._epoch_loss = self._epoch_samples = 0.0
        return mean

    def record(self, **fields) -> None:
        if self.history is not None:
            self.history.append(fields)
        if self.file is not None:
            try:
                self.file.append(fields)
            except OSError as e:   # a full disk: the file keeps whole lines only; the run stops
                raise self.error(f"cannot write the metrics log {self.file.path}: {e.strerror or e}") from None

    def print(self, text: str) -> None:
        if not self.root:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print_or_drop(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()


def describe(metrics: dict, task: str) -> str:
    """Validation/test metrics in a few words."""
    if task == "classification":
        return f"loss {metrics['loss']:.4f} acc {metrics['accuracy']:.4f}"
    return f"mse {metrics['mse']:.4g} mae {metrics['mae']:.4g} r2 {metrics['r2']:.4f}"


def public(metrics: dict) -> dict:
    """Metrics without the confusion matrix (per-epoch records stay one short line)."""
    return {k: v for k, v in metrics.items() if k != "confusion_matrix"}


class JsonLines:
    """An append-only JSON-lines file in which every line is whole: a write that fails part way
    (no space left) is cut back off before the error goes up, so readers never see a torn line."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, fields: dict) -> None:
        data = (json.dumps(fields) + "\n").encode()
        start = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            done = 0
            while done < len(data):
                done += os.write(self.fd, data[done:])
        except OSError:
            try:
                os.ftruncate(self.fd, start)
            except OSError:
                pass
            raise

    def close(self) -> None:
        os.close(self.fd)


_stdout_closed = False


def print_or_drop(text: str) -> None:
    """Print a line on stdout; once the reader has gone (`| head -1`), drop this and every later
    line and train on: the run's results are its checkpoint and metrics, not its stdout."""
    global _stdout_closed
    if _stdout_closed:
        return
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _stdout_closed = True
        # Point stdout at /dev/null, or Python's flush at exit would raise the same error again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
