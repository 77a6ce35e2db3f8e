"""The training loop: resume or start, step, log, evaluate, checkpoint, export.

A run lives in one directory:
    run.json        what the run is (model, data, objective, hyperparameters)
    checkpoints/    orbax: {step, params, opt_state, rng} + {step, data_position}
    metrics.jsonl   one JSON object per train step and per evaluation
Starting a run in a directory that has checkpoints resumes it; the settings
that change the numbers must then be the same as in run.json.

With a sharding plan the state and batches live on a device mesh (see
train/placement.py). In a multi-process run every process runs this loop:
all of them take part in each step, checkpoint save and restore (orbax
writes global arrays together), and process 0 alone writes run.json,
metrics.jsonl, the progress bar and the exported model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import jax
from tqdm import tqdm

from jaxspec.loading import LoadedModel
from jaxspec.sharding import ShardingPlan
from models import CausalLM, build_model
from train.checkpointing import Checkpoints
from train.dataset import BatchStream, Dataset
from train.errors import TrainingError
from train.evaluate import mean_metrics
from train.export import export_hf
from train.metrics import MetricsLog
from train.optimizer import OptimizerConfig, make_optimizer, make_schedule
from train.placement import OnMesh, SingleDevice, is_primary
from train.step import distill_objective, init_state, lm_objective, make_eval_step, make_train_step

RUN_FILE = "run.json"
COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    steps: int
    batch_size: int  # rows per optimizer step, split into `accum` micro-batches
    accum: int = 1
    optimizer: OptimizerConfig = OptimizerConfig()
    z_loss: float = 0.0
    compute_dtype: str = "float32"  # params stay float32 either way
    seed: int = 0
    kl_weight: float = 1.0  # distillation only
    temperature: float = 1.0  # distillation only
    # Settings below do not change the numbers, so a resumed run may change them.
    save_every: int = 100
    keep: int = 3
    eval_every: int = 0  # 0: evaluate only at the end
    eval_batches: int = 16
    export_dtype: str = "float32"


_FREE_TO_CHANGE = ("save_every", "keep", "eval_every", "eval_batches", "export_dtype")


def _check(rc: RunConfig) -> None:
    if rc.batch_size < 1 or rc.accum < 1 or rc.batch_size % rc.accum:
        raise TrainingError(f"batch size {rc.batch_size} must be a positive multiple of accum {rc.accum}")
    if rc.compute_dtype not in COMPUTE_DTYPES:
        raise TrainingError(f"unknown compute dtype {rc.compute_dtype!r} (choose from {', '.join(COMPUTE_DTYPES)})")
    if not 0.0 <= rc.kl_weight <= 1.0 or rc.temperature <= 0:
        raise TrainingError("kl weight must be in [0, 1] and temperature positive")


def _run_record(
    objective: str, hf_config: dict, dataset: Dataset, rc: RunConfig, teacher: str | None, custom, init: str | None
) -> dict:
    run = dataclasses.asdict(rc)
    for k in _FREE_TO_CHANGE:
        run.pop(k)
    return {
        "objective": objective,
        "model": hf_config,
        "data": {k: dataset.meta[k] for k in ("seq_len", "vocab_size", "splits")},
        "teacher": teacher,
        "run": run,
        # Absent from older runs' run.json, where they read as None, as they are here for lm and distill.
        "objective_options": dataclasses.asdict(custom) if custom is not None else None,
        "init": init,
    }


def _bind_run_dir(run_dir: Path, record: dict, write: bool) -> None:
    """Checks that a resumed run is the same run, or (if `write`) writes run.json for a new one."""
    path = run_dir / RUN_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TrainingError(f"{path}: corrupted run file ({e})") from None
        new = json.loads(json.dumps(record))  # tuples → lists, as read back
        for key in new:
            if old.get(key) != new[key]:
                raise TrainingError(
                    f"{run_dir}: holds a run with different {key} settings; resume with the same settings or use a new --out"
                )
        return
    if not write:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def _float_metrics(metrics: dict) -> dict:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def train(
    run_dir: Path,
    hf_config: dict,
    dataset: Dataset,
    rc: RunConfig,
    export_dir: Path,
    teacher: LoadedModel | None = None,
    plan: ShardingPlan | None = None,
    custom_objective=None,
    init: LoadedModel | None = None,
    frozen_params=None,
) -> dict:
    """Trains (or resumes) to rc.steps, exports to export_dir, returns the last train and eval metrics.

    With a plan, on its mesh; jaxspec.distributed.initialize must have run first in a multi-process run.
    `custom_objective` (an object with `name` and `loss_fn(model, z_loss)`, e.g. train.seq2seq.PrefixLM)
    replaces the causal LM loss, for a model of any family; `init` (loaded in float32) supplies the
    starting params instead of a random initialisation. An objective that trains something other than
    the model of `hf_config` (train.heads.HeadsObjective: heads on a frozen target) also has
    `init_params(key)` and `export(export_dir, params, metrics)`, and gets the frozen model's params as
    `frozen_params`.
    """
    _check(rc)
    run_dir = Path(run_dir)
    primary = is_primary()
    model = build_model(hf_config, rc.compute_dtype)
    if custom_objective is not None:
        objective, loss_fn = custom_objective.name, custom_objective.loss_fn(model, rc.z_loss)
        frozen = frozen_params
    elif model.is_encoder_decoder:
        raise TrainingError("an encoder-decoder model trains with an objective of its own (jaxspec-train prefix-lm)")
    elif teacher is None:
        objective, loss_fn, frozen = "lm", lm_objective(model, rc.z_loss), None
    else:
        teacher_model = CausalLM(teacher.model.config, rc.compute_dtype)
        loss_fn = distill_objective(model, teacher_model, rc.kl_weight, rc.temperature, rc.z_loss)
        objective, frozen = "distill", teacher.params
    optimizer = make_optimizer(rc.optimizer)

    def fresh_state():
        init_key, rng = jax.random.split(jax.random.PRNGKey(rc.seed))
        if init is not None:
            params = init.params
        elif hasattr(custom_objective, "init_params"):
            params = custom_objective.init_params(init_key)
        else:
            params = model.init_params(init_key)
        return init_state(params, optimizer, rng)

    abstract_state = jax.eval_shape(fresh_state)
    micro = rc.batch_size // rc.accum
    if plan is None:
        placement = SingleDevice()
    else:
        placement = OnMesh(plan.for_model(model), abstract_state, frozen, rc.batch_size, rc.accum, dataset.seq_len + 1)
    record = _run_record(
        objective, hf_config, dataset, rc, teacher and str(teacher.source), custom_objective, init and str(init.source)
    )
    _bind_run_dir(run_dir, record, primary)

    train_step = make_train_step(loss_fn, optimizer, make_schedule(rc.optimizer), placement.shardings)
    eval_step = make_eval_step(loss_fn, placement.shardings)
    frozen = placement.put_frozen(frozen)

    checkpoints = Checkpoints(run_dir / "checkpoints", rc.save_every, rc.keep)
    latest = checkpoints.latest_step()
    if latest is None:
        state, start, position = placement.new_state(fresh_state), 0, 0
    else:
        state, meta = checkpoints.restore(latest, placement.restore_target(abstract_state))
        start, position = int(state["step"]), int(meta["data_position"])
        if primary:
            sys.stderr.write(f"resuming {run_dir} from the checkpoint of step {start}\n")
    log = MetricsLog(run_dir / "metrics.jsonl", start) if primary else None

    def record(entry: dict) -> None:
        if log is not None:
            log.write(entry)

    stream = BatchStream(dataset.train, rc.batch_size, rc.seed, position)
    held_out = placement.eval_batches(dataset.eval, micro, rc.eval_batches)
    tokens_per_step = rc.batch_size * dataset.seq_len

    def evaluate(step: int) -> dict:
        if not held_out:
            return {}
        result = mean_metrics(eval_step, state["params"], held_out, frozen)
        record({"step": step, **result})
        return result

    last_train, last_eval = {}, {}
    tty = sys.stderr.isatty()
    bar = tqdm(
        total=rc.steps, initial=start, desc=objective, file=sys.stderr, mininterval=0.5 if tty else 30,
        dynamic_ncols=True, disable=not primary,
    )
    tick = time.perf_counter()
    try:
        for step in range(start + 1, rc.steps + 1):
            rows = placement.train_batch(dataset.train, stream.next_index().reshape(rc.accum, micro))
            state, metrics = train_step(state, rows, frozen)
            last_train = _float_metrics(metrics)
            now = time.perf_counter()
            tokens_per_s = tokens_per_step / (now - tick)
            tick = now
            record({"step": step, **last_train, "tokens_per_s": tokens_per_s})
            bar.set_postfix(loss=f"{last_train['loss']:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            bar.update(1)
            if (rc.eval_every and step % rc.eval_every == 0) or step == rc.steps:
                last_eval = evaluate(step)
                tick = time.perf_counter()  # evaluation time is not training throughput
            checkpoints.save(step, state, {"step": step, "data_position": stream.position}, force=step == rc.steps)
    finally:
        bar.close()
        checkpoints.close()
        if log is not None:
            log.close()
    params = placement.host_params(state["params"])
    if primary and hasattr(custom_objective, "export"):
        custom_objective.export(export_dir, params, {**last_train, **last_eval})
    elif primary:
        export_hf(export_dir, params, hf_config, dataset.tokenizer_file, rc.export_dtype)
    return {"step": rc.steps, **last_train, **last_eval}
