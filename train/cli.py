"""`jaxspec-train` / `python -m train`: tokenizer, data, lm, distill, prefix-lm, heads, early-exit, eval and plot
subcommands.

Every error a user can cause is printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxspec.distributed import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID
from jaxspec.errors import JaxspecError
from train.bpe import load_tokenizer
from train.corpus import STDLIB, find_corpus, read_text
from train.errors import TrainingError
from models.block_config import EMBEDDERS, INJECTIONS, block_hf_config
from models.hat_config import hat_hf_config
from train.optimizer import OptimizerConfig

PROG = "jaxspec-train"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage plus a message; the contract is one line
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _corpus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default=STDLIB, help="'stdlib' (the Python standard library's source) or a directory")
    p.add_argument("--pattern", default="*.py", help="file name pattern, searched recursively (default: *.py)")
    p.add_argument("--eval-fraction", type=float, default=0.03, help="share of files held out for evaluation")


def _model_args(p: argparse.ArgumentParser, hidden: int, layers: int, heads: int, kv_heads: int, inter: int) -> None:
    g = p.add_argument_group("model (a Llama-style decoder; --config overrides the size flags)")
    g.add_argument("--config", type=Path, help="a Hugging Face config.json to train instead of the flags below")
    g.add_argument("--hidden", type=int, default=hidden)
    g.add_argument("--layers", type=int, default=layers)
    g.add_argument("--heads", type=int, default=heads)
    g.add_argument("--kv-heads", type=int, default=kv_heads)
    g.add_argument("--intermediate", type=int, default=inter)
    g.add_argument("--max-positions", type=int, default=2048)
    g.add_argument("--rope-theta", type=float, default=10000.0)
    g.add_argument("--tie-embeddings", action="store_true")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="dataset directory made by `jaxspec-train data`")
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, metrics); resumes if it has checkpoints")
    p.add_argument(
        "--export", type=Path,
        help="directory for the final params: a Hugging Face model (default: OUT/hf), heads (default: OUT/heads) or "
        "an exit adapter (default: OUT/adapter)",
    )
    p.add_argument("--export-dtype", default="float32", choices=("float32", "bfloat16"))
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=1000)
    g.add_argument("--batch-size", type=int, default=16, help="rows per optimizer step")
    g.add_argument("--accum", type=int, default=1, help="micro-batches per step (gradient accumulation)")
    g.add_argument("--lr", type=float, default=3e-3)
    g.add_argument("--min-lr-ratio", type=float, default=0.1)
    g.add_argument("--warmup", type=int, default=100)
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--clip", type=float, default=1.0, help="global gradient norm limit")
    g.add_argument("--z-loss", type=float, default=0.0, help="weight of mean(log Z^2)")
    g.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"), help="params stay float32")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("checkpoints and evaluation")
    g.add_argument("--save-every", type=int, default=100)
    g.add_argument("--keep", type=int, default=3)
    g.add_argument("--eval-every", type=int, default=0, help="0: only at the end")
    g.add_argument("--eval-batches", type=int, default=16)
    g = p.add_argument_group("devices and hosts (see docs/training.md, sharded and multi-host training)")
    g.add_argument(
        "--mesh", metavar="data=2,tensor=4",
        help="shard the run over a device mesh; axes data, fsdp, tensor multiply to the device count of all processes",
    )
    g.add_argument("--coordinator", metavar="HOST:PORT", help=f"process 0's address, for a multi-process run (or ${ENV_COORDINATOR})")
    g.add_argument("--num-processes", type=int, help=f"processes in the run (or ${ENV_NUM_PROCESSES})")
    g.add_argument("--process-id", type=int, help=f"this process's id, 0 .. N-1 (or ${ENV_PROCESS_ID})")
    g.add_argument("--tpu", action="store_true", help="join the other workers of a Cloud TPU slice (the slice supplies the rest)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Train tokenizers, backbones and draft models for jaxspec.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on a corpus's training files")
    _corpus_args(p)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--out", type=Path, required=True, help="directory for tokenizer.json")

    p = sub.add_parser("data", help="tokenize a corpus into packed fixed-length rows (numpy memmaps)")
    _corpus_args(p)
    p.add_argument("--tokenizer", type=Path, help="tokenizer.json or a directory holding one")
    p.add_argument("--bytes", action="store_true", help="raw bytes and end of text (id 256), for --arch hat: no tokenizer")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--out", type=Path, required=True, help="dataset directory")

    p = sub.add_parser("lm", help="train a backbone (Llama-style, a Block Transformer or a HAT) with the causal LM loss")
    _train_args(p)
    _model_args(p, hidden=256, layers=6, heads=8, kv_heads=4, inter=704)
    g = p.add_argument_group(
        "Block Transformer (--arch block): the size flags give the block decoder; the token decoder has the same "
        "width and --token-layers layers"
    )
    g.add_argument("--arch", choices=("llama", "block", "hat"), default="llama")
    g.add_argument("--block-len", type=int, default=4, help="tokens per block (must divide --max-positions)")
    g.add_argument("--token-layers", type=int, help="token decoder layers (default: --layers)")
    g.add_argument("--embedder", choices=EMBEDDERS, default="lookup", help="lookup: concatenated embeddings of width D/L")
    g.add_argument("--injection", choices=INJECTIONS, default="prefix", help="how the block context enters the token decoder")
    g.add_argument("--prefix-tokens", type=int, default=2, help="prefix vectors the context expands into (prefix injection)")
    g.add_argument(
        "--uptrain", type=Path, metavar="DIR",
        help="start from a trained Llama-style model: its layers split between the two decoders (sizes from DIR; the "
        "embedder is the projection variant over its embedding)",
    )
    g.add_argument("--split", type=int, help="with --uptrain: layers [0, K) form the block decoder (default: half)")
    g = p.add_argument_group(
        "HAT (--arch hat, on a --bytes dataset): the size flags give the word backbone; the byte encoder and decoder "
        "share the sizes below; --max-positions counts bytes"
    )
    g.add_argument("--byte-hidden", type=int, default=128)
    g.add_argument("--byte-intermediate", type=int, default=352)
    g.add_argument("--byte-heads", type=int, default=4)
    g.add_argument("--byte-kv-heads", type=int, default=2)
    g.add_argument("--encoder-layers", type=int, default=2)
    g.add_argument("--decoder-layers", type=int, default=2)
    g.add_argument("--sliding-window", type=int, default=256, help="bytes a byte layer attends to")
    g.add_argument("--max-word-bytes", type=int, default=100, help="longer words are cut")
    g.add_argument("--connector-heads", type=int, default=4)

    p = sub.add_parser("distill", help="distill a draft model from a teacher: KL(teacher || draft), optionally mixed with CE")
    p.add_argument("--teacher", type=Path, required=True, help="the teacher's model directory (same tokenizer as --data)")
    p.add_argument("--kl-weight", type=float, default=1.0, help="loss = w*KL + (1-w)*CE")
    p.add_argument("--temperature", type=float, default=1.0)
    _train_args(p)
    _model_args(p, hidden=128, layers=2, heads=4, kv_heads=2, inter=352)

    p = sub.add_parser(
        "prefix-lm", help="continue pretraining an encoder-decoder model (from `jaxspec adapt`): source prefix -> continuation"
    )
    p.add_argument("--init", type=Path, required=True, help="the encoder-decoder model directory to start from")
    p.add_argument("--min-prefix", type=float, default=0.25, help="shortest source, as a share of each packed row")
    p.add_argument("--max-prefix", type=float, default=0.75, help="longest source, as a share of each packed row")
    _train_args(p)

    p = sub.add_parser("heads", help="train draft heads (Medusa, Hydra, EAGLE) on a frozen target's own distributions")
    p.add_argument(
        "--kind", choices=("medusa", "hydra", "eagle"), default="medusa",
        help="medusa: heads over the target's hidden state; hydra: each head also reads the tokens drafted before it; "
        "eagle: one decoder layer autoregressive over the target's features (drafts a dynamic tree)",
    )
    p.add_argument("--model", type=Path, required=True, help="the target's model directory (same tokenizer as --data)")
    p.add_argument(
        "--num-heads", type=int, default=3,
        help="heads: head k guesses the token k + 2 places ahead (eagle: drafting steps unrolled in training, the "
        "deepest its trees grow)",
    )
    p.add_argument("--num-layers", type=int, default=1,
                   help="ResBlocks per head (Hydra's first block is its input's; not for eagle: one layer)")
    p.add_argument(
        "--prefix-attention", action="store_true",
        help="hydra: Hydra++'s prefix-attention layer over the target's earlier hidden states before the heads",
    )
    p.add_argument(
        "--draft-vocab", type=int, metavar="N",
        help="draft from the N most frequent ids of the training data only (cheap heads for large vocabularies)",
    )
    _train_args(p)

    p = sub.add_parser(
        "early-exit", help="train an exit adapter (Kangaroo) after a frozen target's first E layers on its own distributions"
    )
    p.add_argument("--model", type=Path, required=True, help="the target's model directory (same tokenizer as --data)")
    p.add_argument("--exit-layer", type=int, required=True, metavar="E", help="target layers run before the adapter")
    _train_args(p)

    p = sub.add_parser("eval", help="held-out loss of a saved model (and KL / agreement against a teacher)")
    p.add_argument("--model", type=Path, required=True, help="a model directory")
    p.add_argument("--data", type=Path, required=True, help="dataset directory; its eval split is used")
    p.add_argument("--teacher", type=Path, help="also report KL(teacher || model) and argmax agreement")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=16, help="number of held-out batches (from the start of the split)")

    p = sub.add_parser("plot", help="plot train and eval loss curves from metrics.jsonl files")
    p.add_argument("metrics", nargs="+", help="METRICS_JSONL[=LABEL]")
    p.add_argument("--out", type=Path, required=True, help="PNG file")
    return parser


def _cmd_tokenizer(a) -> None:
    from train.bpe import save_tokenizer, train_bpe

    corpus = find_corpus(a.corpus, a.pattern, a.eval_fraction)
    tok = train_bpe((read_text(f) for f in corpus.train_files), a.vocab_size)
    save_tokenizer(tok, a.out)
    print(f"tokenizer: {tok.get_vocab_size()} tokens from {len(corpus.train_files)} files of {corpus.root} -> {a.out}")


def _cmd_data(a) -> None:
    from train.packing import build_dataset

    if a.bytes == (a.tokenizer is not None):
        raise TrainingError("give --tokenizer, or --bytes for a byte dataset, not both")
    corpus = find_corpus(a.corpus, a.pattern, a.eval_fraction)
    if a.bytes:
        tok = tok_file = None
    else:
        tok = load_tokenizer(a.tokenizer)
        tok_file = a.tokenizer / "tokenizer.json" if a.tokenizer.is_dir() else a.tokenizer
    meta = build_dataset(corpus, tok, tok_file, a.seq_len, a.out)
    s = meta["splits"]
    print(
        f"data: train {s['train']['rows']} rows ({s['train']['tokens']} tokens, {s['train']['files']} files), "
        f"eval {s['eval']['rows']} rows ({s['eval']['tokens']} tokens, {s['eval']['files']} files) -> {a.out}"
    )


def _model_dict(a) -> dict:
    from train.model_config import llama_config, read_config_file

    if a.config is not None:
        return read_config_file(a.config)
    # The size flags as a stack's config.json sizes: a Block Transformer's block decoder, a HAT's backbone.
    sizes = {
        "hidden_size": a.hidden,
        "intermediate_size": a.intermediate,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
    }
    if getattr(a, "arch", "llama") == "hat":
        byte = {
            "hidden_size": a.byte_hidden,
            "intermediate_size": a.byte_intermediate,
            "num_attention_heads": a.byte_heads,
            "num_key_value_heads": a.byte_kv_heads,
        }
        return hat_hf_config(
            {**byte, "num_hidden_layers": a.encoder_layers}, sizes, {**byte, "num_hidden_layers": a.decoder_layers},
            a.max_positions, a.sliding_window, a.max_word_bytes, a.connector_heads, a.rope_theta,
        )
    if getattr(a, "arch", "llama") == "block":
        token = dict(sizes, num_hidden_layers=a.layers if a.token_layers is None else a.token_layers)
        return block_hf_config(
            a.block_len, sizes, token, a.max_positions, a.rope_theta, a.tie_embeddings, a.embedder, a.injection,
            a.prefix_tokens,
        )
    return llama_config(
        a.hidden, a.layers, a.heads, a.kv_heads, a.intermediate, a.max_positions, a.rope_theta, a.tie_embeddings
    )


def _run_config(a, **extra):
    from train.trainer import RunConfig

    opt = OptimizerConfig(
        lr=a.lr,
        min_lr_ratio=a.min_lr_ratio,
        warmup_steps=a.warmup,
        total_steps=a.steps,
        weight_decay=a.weight_decay,
        clip_norm=a.clip,
    )
    return RunConfig(
        steps=a.steps,
        batch_size=a.batch_size,
        accum=a.accum,
        optimizer=opt,
        z_loss=a.z_loss,
        compute_dtype=a.compute_dtype,
        seed=a.seed,
        save_every=a.save_every,
        keep=a.keep,
        eval_every=a.eval_every,
        eval_batches=a.eval_batches,
        export_dtype=a.export_dtype,
        **extra,
    )


def _join_and_plan(a):
    """Joins the other processes (before anything touches a device) and returns the sharding plan, or None."""
    import jax

    from jaxspec.distributed import ClusterSpec, initialize
    from jaxspec.sharding import ShardingPlan, parse_mesh

    initialize(ClusterSpec(tpu=True) if a.tpu else ClusterSpec.from_env(a.coordinator, a.num_processes, a.process_id))
    if a.mesh is None:
        if jax.process_count() > 1:
            raise TrainingError(f"a multi-process run needs --mesh (axes that multiply to its {jax.device_count()} devices)")
        return None
    return ShardingPlan(parse_mesh(a.mesh))


def _report(result: dict, export: Path) -> None:
    from train.placement import is_primary

    if is_primary():
        print(json.dumps({"export": str(export), **result}))


def _cmd_lm(a) -> None:
    from train.dataset import open_dataset
    from train.model_config import fit_to_data
    from train.trainer import train

    plan = _join_and_plan(a)
    data = open_dataset(a.data)
    if (a.arch == "hat") != data.is_bytes:
        raise TrainingError(
            f"{a.data}: a HAT trains on a byte dataset (`jaxspec-train data --bytes`), other models on a tokenized one"
        )
    init = None
    if a.uptrain is not None:
        init = _uptrain_init(a, data)
        cfg = init.hf_config
    else:
        cfg = _model_dict(a)
    cfg = fit_to_data(cfg, data.vocab_size, *data.special_ids, data.seq_len)
    export = a.export or a.out / "hf"
    _report(train(a.out, cfg, data, _run_config(a), export, plan=plan, init=init), export)


def _uptrain_init(a, data):
    """The vanilla model at --uptrain as a Block Transformer (train/uptrain.py), as the run's starting point."""
    import dataclasses

    from jaxspec.loading import load
    from models import build_model
    from train.uptrain import uptrain_init

    if a.arch != "block":
        raise TrainingError("--uptrain builds a Block Transformer: give --arch block")
    vanilla = load(a.uptrain, dtype="float32")
    cfg, params = uptrain_init(vanilla, a.block_len, a.split, a.injection, a.prefix_tokens, a.seed)
    _check_tokenizer(a.uptrain, data)
    return dataclasses.replace(vanilla, model=build_model(cfg), params=params, hf_config=cfg)


def _check_tokenizer(model_dir: Path, data) -> None:
    """A model trained on (or against) the data must share the vocabulary the data was tokenized with."""
    tok = model_dir / "tokenizer.json"
    if not tok.exists():
        raise TrainingError(f"{model_dir}: no tokenizer.json, so its vocabulary cannot be checked against the data's")
    if load_tokenizer(tok).get_vocab() != load_tokenizer(data.tokenizer_file).get_vocab():
        raise TrainingError(f"{model_dir}: its tokenizer differs from the one that built {data.directory}")


def _cmd_distill(a) -> None:
    from jaxspec.loading import load
    from train.dataset import open_dataset
    from train.model_config import fit_to_data
    from train.trainer import train

    plan = _join_and_plan(a)
    data = open_dataset(a.data)
    teacher = load(a.teacher, dtype="float32")
    _check_tokenizer(a.teacher, data)
    base = _model_dict(a)
    base["vocab_size"] = teacher.model.vocab_size  # the KL compares distributions over the same vocabulary
    cfg = fit_to_data(base, data.vocab_size, *data.special_ids, data.seq_len)
    export = a.export or a.out / "hf"
    rc = _run_config(a, kl_weight=a.kl_weight, temperature=a.temperature)
    _report(train(a.out, cfg, data, rc, export, teacher=teacher, plan=plan), export)


def _cmd_prefix_lm(a) -> None:
    from jaxspec.loading import load
    from train.dataset import open_dataset
    from train.seq2seq import PrefixLM
    from train.trainer import train

    objective = PrefixLM(a.min_prefix, a.max_prefix)
    plan = _join_and_plan(a)
    data = open_dataset(a.data)
    init = load(a.init, dtype="float32")  # params train in float32 whatever the compute dtype
    if not init.model.is_encoder_decoder:
        raise TrainingError(f"{a.init}: prefix-lm trains encoder-decoder models (make one with `jaxspec adapt`)")
    _check_tokenizer(a.init, data)
    export = a.export or a.out / "hf"
    result = train(a.out, init.hf_config, data, _run_config(a), export, plan=plan, custom_objective=objective, init=init)
    _report(result, export)


def _cmd_heads(a) -> None:
    from jaxspec.heads_io import target_fields
    from jaxspec.loading import load
    from jaxspec.methods import adapter_heads
    from models.medusa import HeadsConfig
    from train.dataset import open_dataset
    from train.heads import HeadsObjective, most_frequent_ids
    from train.trainer import train

    if a.prefix_attention and a.kind != "hydra":
        raise TrainingError("--prefix-attention is Hydra++'s layer: it needs --kind hydra")
    if a.kind == "eagle" and a.num_layers != 1:
        raise TrainingError("--num-layers counts ResBlocks of medusa and hydra heads: an eagle drafter is one layer")
    plan = _join_and_plan(a)
    data = open_dataset(a.data)
    target = load(a.model, dtype="float32")
    if target.model.is_encoder_decoder:
        raise TrainingError(f"{a.model}: draft heads train on decoder-only targets")
    _check_tokenizer(a.model, data)
    if a.num_heads < 1 or a.num_layers < 1:
        raise TrainingError("--num-heads and --num-layers must be >= 1")
    fields = target_fields(target.model)
    ids = None
    if a.draft_vocab is not None:
        if not 1 <= a.draft_vocab <= fields["vocab_size"]:
            raise TrainingError(f"--draft-vocab must be in [1, {fields['vocab_size']}], got {a.draft_vocab}")
        ids = most_frequent_ids(data.train, a.draft_vocab, fields["vocab_size"])
    attention = adapter_heads(fields["hidden_size"]) if a.prefix_attention or a.kind == "eagle" else None
    config = HeadsConfig(kind=a.kind, num_heads=a.num_heads, num_layers=a.num_layers, draft_vocab=a.draft_vocab,
                         attention_heads=attention, **fields)
    objective = HeadsObjective(config, str(a.model), ids)
    export = a.export or a.out / "heads"
    result = train(a.out, target.hf_config, data, _run_config(a), export, plan=plan, custom_objective=objective,
                   frozen_params=target.params)
    _report(result, export)


def _cmd_early_exit(a) -> None:
    from jaxspec.errors import InputError
    from jaxspec.loading import load
    from jaxspec.methods import untrained_adapter
    from train.dataset import open_dataset
    from train.early_exit import EarlyExitObjective
    from train.trainer import train

    plan = _join_and_plan(a)
    data = open_dataset(a.data)
    target = load(a.model, dtype="float32")
    if target.model.is_encoder_decoder or not hasattr(target.model.config, "num_layers"):
        raise TrainingError(f"{a.model}: an exit adapter trains on a decoder-only target")
    _check_tokenizer(a.model, data)
    try:
        adapter = untrained_adapter(target.model, a.exit_layer)
    except InputError as e:
        raise TrainingError(str(e)) from None
    objective = EarlyExitObjective(adapter.config, str(a.model))
    export = a.export or a.out / "adapter"
    result = train(a.out, target.hf_config, data, _run_config(a), export, plan=plan, custom_objective=objective,
                   frozen_params=target.params)
    _report(result, export)


def _cmd_eval(a) -> None:
    from train.evaluate import evaluate_saved

    print(json.dumps(evaluate_saved(a.model, a.data, a.teacher, a.batch_size, a.batches)))


def _cmd_plot(a) -> None:
    from train.plotting import plot_losses

    runs = []
    for spec in a.metrics:
        path, _, label = spec.partition("=")
        runs.append((Path(path), label or Path(path).parent.name))
    plot_losses(runs, a.out)
    print(f"plot: {a.out}")


COMMANDS = {
    "tokenizer": _cmd_tokenizer,
    "data": _cmd_data,
    "lm": _cmd_lm,
    "distill": _cmd_distill,
    "prefix-lm": _cmd_prefix_lm,
    "heads": _cmd_heads,
    "early-exit": _cmd_early_exit,
    "eval": _cmd_eval,
    "plot": _cmd_plot,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except JaxspecError as e:
        sys.stderr.write(f"{PROG} {args.command}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG} {args.command}: interrupted\n")
        return 130
    return 0
