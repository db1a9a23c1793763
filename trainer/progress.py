"""Live view of training on rank 0: a tqdm bar on a terminal, log lines otherwise.

`step()` returns a metrics.jsonl record every `log_every` steps (and at the last step), so
the file holds the same numbers the bar and the log show.
"""

from __future__ import annotations

import time

from tqdm import tqdm


class Progress:
    def __init__(self, total_steps: int, global_batch: int, enabled: bool, bar: bool, log_every: int):
        self.total, self.global_batch, self.enabled = total_steps, global_batch, enabled
        self.log_every = max(1, log_every)
        self.start = self.last_t = time.perf_counter()
        self.last_step = 0
        self.loss_sum, self.loss_n = 0.0, 0
        self.bar = (tqdm(total=total_steps * global_batch, unit="sample", unit_scale=True,
                         dynamic_ncols=True, desc="train") if enabled and bar else None)

    def step(self, step: int, epoch: int, loss: float, lrs: list[float] = ()) -> dict | None:
        if not self.enabled:
            return None
        self.loss_sum, self.loss_n = self.loss_sum + loss, self.loss_n + 1
        if self.bar is not None:
            self.bar.update(self.global_batch)
            self.bar.set_postfix(step=step, loss=f"{loss:.4f}", refresh=False)
        if step % self.log_every and step != self.total:
            return None
        now = time.perf_counter()
        record = {
            "event": "train", "step": step, "epoch": epoch,
            "loss": self.loss_sum / self.loss_n,  # mean since the last record
            "samples_per_s": (step - self.last_step) * self.global_batch / max(now - self.last_t, 1e-9),
            "elapsed_s": round(now - self.start, 3),
        }
        if lrs:
            # Param groups: the fused embedding ones first, the dense one last.
            record["lr_embeddings"], record["lr_dense"] = lrs[0], lrs[-1]
        self.last_t, self.last_step, self.loss_sum, self.loss_n = now, step, 0.0, 0
        if self.bar is None:
            eta = (now - self.start) / step * (self.total - step)
            print(f"step {step}/{self.total} epoch {epoch} loss {record['loss']:.4f} "
                  f"{record['samples_per_s']:,.0f} samples/s eta {eta:.0f}s", flush=True)
        return record

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
