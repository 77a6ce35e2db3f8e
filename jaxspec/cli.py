"""The `jaxspec` command line: generate, bench, score, convert, info, profile, plan, adapt, demo.

Every user error prints one line on stderr and exits with code 2; there is no
traceback for anything the user can fix.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from jaxspec.errors import InputError, JaxspecError
from jaxspec.method_setup import ADAPTIVE, MethodOptions
from jaxspec.methods import AUTO, AUTO_MAX_DRAFTS, AUTO_TREE_SIZES, LOOKAHEAD_DEFAULTS, METHODS
from jaxspec.skip_search import CONTEXT_WINDOW

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


class _AppendPrompt(argparse.Action):
    """--prompt, --prompt-ids and --prompts share one ordered list (so do --target and --target-ids)."""

    def __call__(self, parser, namespace, value, option_string=None):
        items = getattr(namespace, self.dest, None) or []
        items.append((option_string, value))
        setattr(namespace, self.dest, items)


def _add_prompt_args(p: argparse.ArgumentParser, with_file: bool) -> None:
    kw = dict(action=_AppendPrompt, dest="prompt_items")
    p.add_argument("--prompt", metavar="TEXT", help="a text prompt (an encoder-decoder model's input) (repeatable)", **kw)
    p.add_argument("--prompt-ids", metavar="1,2,3", help="token ids (repeatable)", **kw)
    if with_file:
        p.add_argument(
            "--prompts", metavar="FILE.jsonl", help='a file of lines {"prompt": "..."} or {"prompt_ids": [...]}', **kw
        )
    p.set_defaults(prompt_items=[])


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxspec", description="Fast, exact LLM decoding in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="decode a batch of prompts")
    g.add_argument("--model", required=True, help="a Hugging Face directory or a jaxspec checkpoint")
    _add_prompt_args(g, with_file=True)
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument(
        "--stop", metavar="TEXT", action="append", default=[],
        help="byte-level models (HAT): also stop once the output ends with TEXT's bytes (repeatable)",
    )
    g.add_argument("--temperature", type=float, default=0.0, help="0 (the default) is greedy")
    g.add_argument("--top-k", type=int, default=0, help="0: off")
    g.add_argument("--top-p", type=float, default=1.0, help="1: off")
    g.add_argument("--min-p", type=float, default=0.0, help="0: off")
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help='row i samples with seed + i, or with its own "seed" from the prompts file; a row\'s output '
        "does not depend on the other rows (0 <= seed < 2^32)",
    )
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    g.add_argument(
        "--mesh", metavar="data=2,tensor=4",
        help="shard over a device mesh (the checkpoint is read straight into its shards); axes data, fsdp, tensor "
        "multiply to the device count"
    )
    g.add_argument("--method", choices=METHODS, default="autoregressive")
    _add_method_args(g)
    g.add_argument("--json", action="store_true", help="one JSON line per prompt")

    b = sub.add_parser("bench", help="tokens/s of several methods on the same prompts, optionally beside transformers")
    b.add_argument("--model", required=True)
    b.add_argument("--prompts", required=True, metavar="FILE.jsonl")
    b.add_argument("--methods", default="autoregressive", help=f"comma-separated, from {', '.join(METHODS)}")
    b.add_argument("--batch-size", type=int, default=1)
    b.add_argument("--max-new-tokens", type=int, default=128)
    b.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    b.add_argument("--repeats", type=int, default=3, help="timed calls per batch after the warm-up; the median counts")
    b.add_argument(
        "--max-other-load", type=float, metavar="SHARE",
        help="redo a timed call during which other processes used more than this share of the cores, once they "
        "have gone idle (waiting up to 2 min); the share is reported either way",
    )
    _add_method_args(b)
    b.add_argument("--compare-hf", action="store_true", help="also run transformers' generate, assisted generation and prompt lookup")
    b.add_argument("--out", metavar="FILE.jsonl", help="Spec-Bench-style per-prompt results")

    s = sub.add_parser(
        "score", help="log-probabilities of each prompt token (encoder-decoder models: of each --target given its prompt)"
    )
    s.add_argument("--model", required=True)
    _add_prompt_args(s, with_file=False)
    kw = dict(action=_AppendPrompt, dest="target_items")
    s.add_argument("--target", metavar="TEXT", help="encoder-decoder models: the decoder text to score, one per prompt, in order", **kw)
    s.add_argument("--target-ids", metavar="1,2,3", help="encoder-decoder models: target token ids (repeatable)", **kw)
    s.set_defaults(target_items=[])
    s.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    s.add_argument("--json", action="store_true", help="one JSON line per prompt (the only output form)")

    c = sub.add_parser(
        "convert", help="Hugging Face directory, jaxspec checkpoint or GGUF file → Hugging Face directory or jaxspec "
        "checkpoint, one tensor at a time"
    )
    c.add_argument("src")
    c.add_argument("out")
    c.add_argument("--to", choices=("jaxspec", "hf"), default="jaxspec")
    c.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="default: keep the stored dtype")
    c.add_argument(
        "--max-shard-size", default="5GB", metavar="SIZE",
        help="--to hf: safetensors shards of at most SIZE (KB, MB, GB), with model.safetensors.index.json when "
        "there are several (default: 5GB)",
    )

    d = sub.add_parser(
        "demo", help="a real model (Gemma 3 270M, from the jaxspec[demo] extra) writes code and prose, plainly and speculatively"
    )
    d.add_argument("--model", default=None, help="default: Gemma 3 270M, converted once into ~/.cache/jaxspec")
    d.add_argument("--draft", default=None, help="speculate with this draft model (default: prompt lookup)")
    d.add_argument("--prompt", action="append", default=None, help="default: a code, a prose and a quoting prompt (repeatable)")
    d.add_argument("--max-new-tokens", type=int, default=64)
    d.add_argument(
        "--num-draft-tokens", type=_int_or_auto, default=AUTO, metavar="K|auto",
        help="drafts per step; auto (the default) sizes them from the measured forward cost, as for generate",
    )

    pr = sub.add_parser(
        "profile", help="the cost of one target forward per window width, relative to one token (what sizes drafts)"
    )
    pr.add_argument("--model", required=True)
    pr.add_argument("--batch-size", type=int, default=1)
    pr.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    pr.add_argument(
        "--widths", default=None, metavar="1,2,3", help="window widths to measure (default: those every method compiles)"
    )
    pr.add_argument("--fresh", action="store_true", help="measure again instead of reading the cached curve")
    pr.add_argument("--json", action="store_true")

    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("path")
    i.add_argument("--json", action="store_true")

    pl = sub.add_parser(
        "plan", help="per-device bytes of params, KV cache, optimizer state and activations on a mesh, from config.json alone"
    )
    pl.add_argument("--model", required=True, help="a directory with the model's config.json (weights are not read)")
    pl.add_argument("--mesh", required=True, metavar="data=D,fsdp=F,tensor=T", help="mesh axis sizes; no devices needed")
    pl.add_argument("--batch-size", type=int, required=True, help="rows decoded at once, and the training batch")
    pl.add_argument("--max-len", type=int, required=True, help="KV cache slots when decoding; tokens per row when training")
    pl.add_argument("--prompt-len", type=int, default=None, help="tokens prefilled at once when decoding (default: half of --max-len)")
    pl.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="params, cache and activations")
    pl.add_argument("--device-memory", type=float, metavar="GiB", help="also say whether each total fits in this much per device")
    pl.add_argument("--json", action="store_true")

    a = sub.add_parser("adapt", help="decoder-only Gemma 2 → encoder-decoder T5Gemma, to continue pretraining from")
    a.add_argument("src")
    a.add_argument("out")
    a.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="default: keep the stored dtype")
    return parser


def _int_or_auto(text: str) -> int | str:
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or {AUTO}, got {text!r}") from None


def _add_method_args(p: argparse.ArgumentParser) -> None:
    """The method knobs of generate and bench: MethodOptions' fields, with its defaults."""
    default = MethodOptions()
    p.add_argument("--draft", metavar="PATH", help="draft model for --method draft-model")
    p.add_argument(
        "--num-draft-tokens", type=_int_or_auto, default=default.num_draft_tokens, metavar="K|auto",
        help=f"drafts per step; auto (the default): up to {AUTO_MAX_DRAFTS['prompt-lookup']} for prompt lookup and "
        f"{AUTO_MAX_DRAFTS['draft-model']} for a draft model or layer skipping, each step verifying as many as the measured forward cost "
        "(cached per model, dtype, backend and batch size) and the rows' acceptance so far make worthwhile",
    )
    p.add_argument(
        "--adaptive-draft",
        action="store_true",
        help=f"draft model: stop drafting when the draft's top probability < {ADAPTIVE.min_confidence} or its "
        f"estimated rejection chance > {ADAPTIVE.max_reject_prob}, and adapt K between steps",
    )
    p.add_argument("--ngram", type=int, default=default.ngram, help="prompt lookup: longest n-gram to match")
    p.add_argument(
        "--lookup-branches", type=int, default=default.lookup_branches, metavar="M",
        help="prompt lookup: copy after the best M matches, their continuations merged into a tree of M x "
        "--num-draft-tokens nodes (auto: 8 deep, the whole tree verified every step); 1 (the default): a chain "
        "after the best match",
    )
    p.add_argument(
        "--heads", metavar="DIR", help="draft heads for --method medusa, hydra or eagle, of that kind (made by jaxspec-train heads)"
    )
    p.add_argument(
        "--tree-size", type=_int_or_auto, default=default.tree_size, metavar="N|auto",
        help="tree methods (medusa, hydra, eagle, token-recycling, ngram-trie): nodes of the draft tree, grown from the "
        "heads' measured accuracies (eagle: the best nodes by draft probability, each step), or for the training-free "
        "methods from their hit rates measured on Gemma 3; "
        f"auto (the default): for the head methods, the size among {', '.join(map(str, AUTO_TREE_SIZES))} of best "
        "expected speedup given those accuracies, the target's measured forward cost and the drafter's measured step "
        "time (both timed once per model and batch size, cached on disk), or plain decoding where no tree pays; for "
        f"token-recycling and ngram-trie, a {AUTO_TREE_SIZES[-1]}-node tree of which each step verifies the prefix "
        "its acceptance so far and the measured forward cost make pay (none: a plain step)",
    )
    p.add_argument(
        "--successor-table", metavar="FILE.npz",
        help="token recycling: start from the successor table saved in FILE (when it exists) and save the table "
        "there after the call, so that later calls start hot",
    )
    p.add_argument("--reference", metavar="FILE", help="prompt lookup: also copy from this text file")
    p.add_argument(
        "--window", type=_int_or_auto, default=default.window, metavar="W|auto",
        help=f"jacobi, speculative-jacobi: guesses refined and verified per step; auto (the default): up to "
        f"{AUTO_MAX_DRAFTS['jacobi']}, each step verifying as many as the forward cost makes worthwhile. lookahead: "
        f"columns of the Jacobi window; auto: {LOOKAHEAD_DEFAULTS['window']}, or plain decoding where the tree's "
        "tokens per call measured on Gemma 3 cannot pay for the measured cost of verifying it",
    )
    p.add_argument(
        "--levels", type=int, default=default.levels, metavar="N",
        help="lookahead: n-gram size; the window keeps the last N - 1 Jacobi iterates",
    )
    p.add_argument(
        "--pool-size", type=int, default=default.pool_size, metavar="G",
        help="lookahead: n-grams kept per key and verified per step; the tree has (W + G) x (N - 1) nodes",
    )
    p.add_argument(
        "--skip-layers", default=default.skip_layers, metavar="SPEC|FILE.json|auto",
        help="layer-skip: the sub-layers the target skips when drafting for itself: a3,m3,... (the attention "
        "or MLP of those layers), exit:E (only the first E layers run), a set saved by --save-skip-layers, or auto "
        f"(the default): searched on the prompts, the last {CONTEXT_WINDOW} tokens of each teacher-forced, for the "
        "best expected speedup (plain decoding where no set pays)",
    )
    p.add_argument(
        "--search-budget", type=int, default=default.search_budget, metavar="N",
        help="layer-skip auto: candidate skip sets the search scores at most",
    )
    p.add_argument("--save-skip-layers", metavar="FILE.json", help="layer-skip: save the skip set used, to reuse it")
    p.add_argument(
        "--adapter", metavar="DIR",
        help="early-exit: the exit adapter the target drafts through after its first E layers (made by "
        "jaxspec-train early-exit)",
    )
    p.add_argument(
        "--exit-layer", type=int, metavar="E",
        help="early-exit: layers run before the exit; without --adapter, drafts through an untrained adapter "
        "(plain early exit); with one, must be the adapter's",
    )
    p.add_argument(
        "--exit-layers", default=default.exit_layers, metavar="E1,E2,...|auto",
        help="dynamic-exit: the exits the target may draft through, each step choosing the exit and draft length "
        "of most expected tokens per measured cost (or plain decoding); auto (the default): a quarter, half and "
        "three quarters of its layers",
    )
    p.add_argument(
        "--draft-vocab", type=int, default=default.draft_vocab, metavar="N",
        help="layer-skip, early-exit, dynamic-exit: each row drafts over N ids from its own text (the prompt's tokens, then what "
        "the target predicts and emits), so drafting reads N rows of the head instead of the whole vocabulary "
        "(exact either way); 0: the whole vocabulary",
    )


def method_defaults() -> dict:
    """The shared method flags' defaults, for runners that build their flags by hand (bench/)."""
    p = argparse.ArgumentParser(add_help=False)
    _add_method_args(p)
    return vars(p.parse_args([]))


def _read_prompt_file(path: str) -> list[tuple[str, object, int | None]]:
    """(kind, value, seed or None) per line of a prompts file."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise InputError(f"{path}: cannot read prompts file ({e.strerror})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}:{n}: not a JSON line") from None
        if isinstance(obj, dict) and "prompt" in obj and "prompt_ids" in obj:
            raise InputError(f'{path}:{n}: give "prompt" or "prompt_ids", not both')
        if isinstance(obj, dict) and isinstance(obj.get("prompt"), str):
            item = ("--prompt", obj["prompt"])
        elif isinstance(obj, dict) and isinstance(obj.get("prompt_ids"), list):
            item = ("ids", obj["prompt_ids"])
        else:
            raise InputError(f'{path}:{n}: expected {{"prompt": "..."}} or {{"prompt_ids": [...]}}')
        seed = obj.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise InputError(f"{path}:{n}: seed must be an integer")
        out.append((*item, seed))
    return out


def _expand(items) -> list[tuple[str, object, int | None]]:
    """The command line's prompt items in order, each prompts file replaced by its lines."""
    expanded = []
    for kind, value in items:
        expanded.extend(_read_prompt_file(value) if kind == "--prompts" else [(kind, value, None)])
    return expanded


def prompt_seeds(items, seed: int) -> list[int]:
    """Row i's seed: the one its prompts-file line gives, else seed + i."""
    return [own if own is not None else seed + i for i, (_, _, own) in enumerate(_expand(items))]


def _parse_ids(flag: str, text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"{flag} expects comma-separated integers, got {text!r}") from None


def resolve_prompts(items, tokenizer, what: str = "--prompt, --prompt-ids or --prompts") -> list[list[int]]:
    expanded = _expand(items)
    if not expanded:
        raise InputError(f"give at least one {what}")
    prompts = []
    for kind, value, _ in expanded:
        if kind in ("--prompt", "--target"):
            if tokenizer is None:
                raise InputError(f"this model has no tokenizer.json: use {kind}-ids")
            prompts.append(tokenizer.encode(value))
        elif kind in ("--prompt-ids", "--target-ids"):
            prompts.append(_parse_ids(kind, value))
        else:
            if not all(isinstance(t, int) for t in value):
                raise InputError("prompt_ids must be a list of integers")
            prompts.append(list(value))
    return prompts


def _say(msg: str) -> None:
    print(f"jaxspec: {msg}", file=sys.stderr, flush=True)


def load_draft(args, dtype):
    from jaxspec.loading import load

    return load(args.draft, dtype) if args.draft else None


def _cmd_generate(args) -> None:
    from jaxspec.api import decode_ids
    from jaxspec.loading import load
    from jaxspec.sampling import SamplingConfig

    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p, args.min_p)
    lm = load(args.model, args.dtype, mesh=args.mesh)  # on a mesh, read straight into the shards
    prompts = resolve_prompts(args.prompt_items, lm.tokenizer)
    draft = load_draft(args, args.dtype) if args.method == "draft-model" else None
    results = decode_ids(
        lm, prompts, max_new_tokens=args.max_new_tokens, method=args.method, draft=draft,
        options=MethodOptions.from_args(args), sampling=sampling, seed=prompt_seeds(args.prompt_items, args.seed),
        mesh=args.mesh, progress=_say, stop=args.stop,
    )
    decode = lm.tokenizer.decode if lm.tokenizer else (lambda ids: None)
    for r in results:
        text = decode(r.output_ids)
        if args.json:
            row = {
                "prompt_ids": r.prompt_ids,
                "output_ids": r.output_ids,
                "text": text,
                "new_tokens": r.new_tokens,
                "wall_time": r.wall_time,
                "target_calls": r.target_calls,
                "accept_lengths": r.accept_lengths,
            }
            print(json.dumps(row))
        else:
            shown = text if text is not None else " ".join(map(str, r.output_ids))
            prompt = decode(r.prompt_ids) if lm.tokenizer else " ".join(map(str, r.prompt_ids))
            print(f"{prompt}\033[1m{shown}\033[0m" if sys.stdout.isatty() else f"{prompt}{shown}")
            print(f"-- {r.new_tokens} tokens, {r.target_calls} target calls", file=sys.stderr)
    if results and not args.json:
        total = sum(r.new_tokens for r in results)
        wall = results[0].wall_time
        print(f"-- batch of {len(results)}: {total} tokens in {wall:.2f} s (compilation included)", file=sys.stderr)


def _cmd_score(args) -> None:
    from jaxspec.generate import score
    from jaxspec.loading import load

    lm = load(args.model, args.dtype)
    prompts = resolve_prompts(args.prompt_items, lm.tokenizer)
    targets = resolve_prompts(args.target_items, lm.tokenizer, what="--target or --target-ids") if args.target_items else None
    for row in score(lm.model, lm.params, prompts, targets):
        print(json.dumps(row))


def _cmd_convert(args) -> None:
    from jaxspec.convert import convert
    from jaxspec.safetensors_out import parse_size

    source = convert(args.src, args.out, to=args.to, dtype=args.dtype, max_shard_bytes=parse_size(args.max_shard_size))
    print(f"wrote {args.to} checkpoint to {args.out} ({len(source.shapes)} tensors, one at a time)", file=sys.stderr)


def _cmd_adapt(args) -> None:
    from jaxspec.adapt import adapt

    adapt(args.src, args.out, args.dtype)
    print(f"wrote the T5Gemma adapted from {args.src} to {args.out}", file=sys.stderr)


def _cmd_info(args) -> None:
    from jaxspec.loading import load

    lm = load(args.path, dtype=None)
    info = {
        "path": str(args.path),
        "format": lm.format,
        **lm.model.describe(),
        "parameters": lm.num_params,
        "dtype": lm.model.dtype,
        "eos_ids": list(lm.eos_ids),
        "tokenizer": "bytes" if getattr(lm.model, "byte_level", False) else lm.tokenizer is not None,
    }
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:>16}: {v}")


def _cmd_profile(args) -> None:
    from jaxspec.cost_model import DEFAULT_CONTEXT, DEFAULT_WIDTHS, cost_curve, curve_key, curve_path
    from jaxspec.loading import load

    widths = DEFAULT_WIDTHS if args.widths is None else _parse_ids("--widths", args.widths)
    if args.batch_size < 1:
        raise InputError(f"batch-size must be >= 1, got {args.batch_size}")
    if 1 not in widths or min(widths) < 1:
        raise InputError(f"--widths must be positive and include 1 (costs are relative to it), got {args.widths}")
    lm = load(args.model, args.dtype)
    key = curve_key(lm.model, lm.params, batch_size=args.batch_size, widths=widths, context=DEFAULT_CONTEXT)
    curve = cost_curve(lm.model, lm.params, batch_size=args.batch_size, widths=widths, fresh=args.fresh, progress=_say)
    rows = [dict(width=w, ms=1e3 * t, cost=c) for w, t, c in zip(curve.widths, curve.seconds, curve.relative())]
    if args.json:
        print(json.dumps(dict(key=key, curve=rows, cache=str(curve_path(key)))))
        return
    print(f"{args.model}: {key['backend']} ({key['device_kind']}), {args.dtype}, batch {args.batch_size}, "
          f"after {curve.context} cached tokens")
    print(f"{'width':>6} {'ms':>9} {'cost':>6}")
    for r in rows:
        print(f"{r['width']:>6} {r['ms']:>9.2f} {r['cost']:>6.2f}  {'#' * round(10 * r['cost'])}")


def _cmd_plan(args) -> None:
    from jaxspec.loading import read_model_config
    from jaxspec.memory_plan import plan_memory

    _, model = read_model_config(Path(args.model), args.dtype)
    plan = plan_memory(model, args.mesh, args.batch_size, args.max_len, args.prompt_len)
    if args.json:
        print(json.dumps(plan.as_dict()))
        return
    gib = lambda n: f"{n / 2**30:10.3f} GiB"
    print(f"{args.model} on {args.mesh}, {args.dtype}, batch {args.batch_size}, {args.max_len} tokens: bytes per device")
    rows = [
        ("decoding", [("params", plan.params), ("KV cache", plan.kv_cache),
                      ("activations (estimate)", plan.decode_activations)], plan.decode_total),
        ("training", [("params", plan.train_params), ("optimizer state", plan.optimizer), ("gradients", plan.gradients),
                      ("activations (estimate)", plan.train_activations)], plan.train_total),
    ]
    for what, parts, total in rows:
        print(f"{what}:")
        for name, n in parts:
            print(f"  {name:<24}{gib(n)}")
        fits = "" if args.device_memory is None else (
            "  fits" if total <= args.device_memory * 2**30 else f"  does not fit in {args.device_memory:g} GiB")
        print(f"  {'total':<24}{gib(total)}{fits}")
    for note in plan.fallbacks:
        print(f"replicated: {note}")


def _cmd_demo(args) -> None:
    from jaxspec.demo import PROMPTS, run_demo

    prompts = [(f"prompt {i + 1}", p) for i, p in enumerate(args.prompt)] if args.prompt else PROMPTS
    run_demo(args.model, args.draft, prompts, args.max_new_tokens, args.num_draft_tokens)


def _cmd_bench(args) -> None:
    from jaxspec.bench import run_bench

    run_bench(args)


COMMANDS = {
    "generate": _cmd_generate,
    "bench": _cmd_bench,
    "score": _cmd_score,
    "convert": _cmd_convert,
    "info": _cmd_info,
    "profile": _cmd_profile,
    "adapt": _cmd_adapt,
    "plan": _cmd_plan,
    "demo": _cmd_demo,
}


def main(argv=None) -> int:
    """Runs one command and returns its exit code; leaves the process's signal handlers as they are,
    since tests, notebooks and user code call it in-process."""
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except JaxspecError as e:
        print(f"jaxspec: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def run() -> None:
    """The `jaxspec` console script. `jaxspec info M | head` ends quietly when the reader goes away, like
    any Unix tool: SIGPIPE takes its default action. Only here, in a process of the CLI's own: set in
    main(), it made any later write to a closed pipe or socket kill the caller's process outright (a
    pytest worker died without a word)."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())


if __name__ == "__main__":
    run()
