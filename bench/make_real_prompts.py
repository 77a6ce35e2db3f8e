"""Writes real-text prompt sets in bench/prompts/real/, one per Spec-Bench-style category.

    python -m bench.make_real_prompts --tokenizer path/to/gemma-3-270m.gguf

The prompts are for a small pretrained base model (Gemma 3 270M), not a chat
model, so every prompt is a document to continue rather than an instruction.
Only text that ships with Python and this machine is used, and nothing is
downloaded: standard library source and docstrings, the language reference
sections in `pydoc_data.topics`, and license texts (/usr/share/common-licenses,
the stdlib's LICENSE.txt, the license files of installed packages).

- multi_turn.jsonl: a conversation ("User: ... Assistant: ...") about one
  stdlib module; each question names a function or method and each answer is
  its docstring, and the prompt ends at the assistant's turn for the next one.
- summarization.jsonl: a language reference section, then "Summary:" or
  "TL;DR:".
- qa.jsonl: a reference section or license passage, a question written here
  whose answer is in the passage (checked), then "Answer:".
- code_completion.jsonl: the start of a stdlib function, method or class, cut
  at a line boundary a little past its middle.
- code_editing.jsonl: a stdlib function, a comment asking for an edited copy
  (a variable renamed, a docstring or type hints added, comments removed) and
  the edited copy's first line, so most of the continuation copies the input.
- rewriting.jsonl: a license passage or module docstring, then a cue such as
  "The same text in plain words:". It stands in for Spec-Bench's translation:
  no text in another language ships here, and a rewrite, like a translation,
  follows its source closely.

Each category has --count prompts (24, so a bench can subsample 16), from a
different source file, module or section each, picked evenly spaced over the
sorted candidates; nothing is random. Prompt lengths are kept between 150 and
700 tokens, counted with the Gemma 3 tokenizer when --tokenizer is given (a
.gguf file, read by transformers, or a tokenizer.json) and otherwise estimated
as 4 characters a token for prose and 3 for code.

The committed prompts, not this script, define the benchmark: stdlib text and
installed packages differ across Python versions and machines. The committed
set was made on Python 3.11.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

from pydoc_data.topics import topics

from train.corpus import find_corpus, read_text, stdlib_root

OUT = Path(__file__).parent / "prompts" / "real"
MIN_TOKENS, MAX_TOKENS = 150, 700
PASSAGE_TOKENS = 520  # leaves room for the question or cue under MAX_TOKENS
COMMON_LICENSES = Path("/usr/share/common-licenses")

# Test suites and generated tables are not what a user asks a model about.
SKIP_DIRS = {"test", "tests", "idle_test", "encodings", "pydoc_data", "__phello__"}


# --- token counting ---------------------------------------------------------------


class TokenCounter:
    """Gemma 3 token counts from a real tokenizer when given one, else an estimate from characters."""

    def __init__(self, path: str | None):
        self._encode = _load_encoder(Path(path)) if path else None
        self.how = f"Gemma 3 tokenizer ({path})" if path else "estimated: 4 characters/token for prose, 3 for code"

    def __call__(self, text: str, code: bool = False) -> int:
        if self._encode is not None:
            return len(self._encode(text))
        return -(-len(text) // (3 if code else 4))


def _load_encoder(path: Path) -> Callable[[str], list[int]]:
    # Imported here: transformers is a test-only dependency and tokenizers is only needed for exact counts.
    if path.suffix == ".gguf":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return lambda text: tok.encode(text, add_special_tokens=False)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))
    return lambda text: tok.encode(text, add_special_tokens=False).ids


# --- selection and text helpers ---------------------------------------------------


def spread(items: list, n: int) -> list:
    """n items evenly spaced over the list (all of them if there are fewer), so picks span the alphabet."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def interleave(*groups: list) -> list:
    """Round-robin over the groups, so any prefix of the result mixes them."""
    out = []
    for i in range(max(map(len, groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def paragraphs(text: str) -> list[str]:
    return [p.rstrip() for p in re.split(r"\n\s*\n", text.strip("\n")) if p.strip()]


def fit_paragraphs(paras: list[str], count: TokenCounter, budget: int = PASSAGE_TOKENS) -> str:
    """The longest run of leading paragraphs within the budget ("" if the first alone is over it)."""
    passage = ""
    for p in paras:
        longer = f"{passage}\n\n{p}" if passage else p
        if count(longer) > budget:
            break
        passage = longer
    return passage


def squash(text: str) -> str:
    """Whitespace collapsed, to find a phrase that the source wrapped over two lines."""
    return " ".join(text.split())


def row(category: str, prompt: str, source: str) -> dict:
    return {"prompt": prompt, "category": category, "source": source}


# --- sources: stdlib modules ------------------------------------------------------


def stdlib_modules() -> list[tuple[str, ast.Module, list[str]]]:
    """(path relative to the stdlib, syntax tree, lines) of every parseable stdlib module, sorted by path."""
    root = stdlib_root()
    modules = []
    for path in find_corpus("stdlib", eval_fraction=0.0).train_files:
        relative = path.relative_to(root)
        if SKIP_DIRS.intersection(relative.parts) or relative.name.startswith("test_"):
            continue
        text = read_text(path)
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):  # a few files are Python 2 or deliberately broken
            continue
        modules.append((relative.as_posix(), tree, text.splitlines()))
    return modules


def module_name(relative: str) -> str:
    parts = relative.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def definitions(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of top-level functions and classes and of the methods of top-level classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, node
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f"{node.name}.{sub.name}", sub


def source_of(node: ast.AST, lines: list[str]) -> str:
    """A definition's source with its decorators and its own indentation."""
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return "\n".join(lines[start - 1 : node.end_lineno]) + "\n"


# --- sources: documentation sections and licenses ---------------------------------

_UNDERLINE = re.compile(r"([*=\-~^])\1{2,}")


def doc_sections() -> list[tuple[str, str, str]]:
    """(topic, heading, text) of every language reference section in pydoc's topics, each heading once."""
    seen, out = set(), []
    for topic in sorted(topics):
        lines = topics[topic].splitlines()
        # A heading is a line underlined by a row of one punctuation character of the same length.
        heads = [i - 1 for i in range(1, len(lines)) if _UNDERLINE.fullmatch(lines[i]) and len(lines[i]) == len(lines[i - 1])]
        for start, end in zip(heads, heads[1:] + [len(lines)]):
            heading = lines[start]
            # Topics repeat sections of one another ("if" is also in "compound"); keep the first copy.
            if heading not in seen:
                seen.add(heading)
                out.append((topic, heading, "\n".join(lines[start:end]).strip()))
    return out


def doc_source(topic: str, heading: str) -> str:
    return f"pydoc_data.topics[{topic!r}]: {heading}"


def license_texts() -> list[tuple[str, str]]:
    """(source, text) of the license texts on this machine, each distinct text once."""
    site = Path(sysconfig.get_paths()["purelib"])
    files = [(str(p), p) for p in sorted(COMMON_LICENSES.glob("*")) if p.is_file() and not p.is_symlink()]
    files.append(("stdlib/LICENSE.txt", stdlib_root() / "LICENSE.txt"))
    # A package's own license only: the licenses of its vendored third-party code sit deeper.
    for pattern in ("*.dist-info/LICEN[CS]E*", "*.dist-info/licenses/LICEN[CS]E*"):
        for p in sorted(site.glob(pattern)):
            if p.is_file():
                files.append((f"site-packages/{p.relative_to(site).as_posix()}", p))
    kept, out = [], []
    for source, path in files:
        text = path.read_text(errors="replace")
        # Packages ship the same license (Apache, MIT) under their own header and copyright line,
        # so a copy is found by a stretch from its middle rather than by its start.
        flat = squash(text)
        probe = flat[len(flat) // 2 : len(flat) // 2 + 200]
        if not any(probe in other for other in kept):
            kept.append(flat)
            out.append((source, text))
    return out


# --- multi_turn -------------------------------------------------------------------

_FOLLOW_UPS = ("And `{}`?", "What about `{}`?", "How does `{}` behave?")
ANSWER_TOKENS = 200  # one docstring must not fill the conversation
MAX_ANSWERS = 4


def documented_callables(name: str, tree: ast.Module, count: TokenCounter) -> list[tuple[str, str]]:
    """(call signature, answer) of a module's public documented functions and methods; the answer is the docstring."""
    out = []
    for qualname, node in definitions(tree):
        if isinstance(node, ast.ClassDef) or any(part.startswith("_") for part in qualname.split(".")):
            continue
        doc = ast.get_docstring(node) or ""
        answer = fit_paragraphs(paragraphs(doc), count, budget=ANSWER_TOKENS) if len(doc) >= 60 else ""
        if answer:
            # A user calls a method without self or cls.
            args = re.sub(r"^(self|cls)(, )?", "", ast.unparse(node.args))
            # Long default values would swamp the question; the name alone still identifies the callable.
            out.append((f"{name}.{qualname}({args if len(args) <= 50 else '...'})", answer))
    return out


def question(turn: int, call: str) -> str:
    return f"What does `{call}` do?" if turn == 0 else _FOLLOW_UPS[(turn - 1) % len(_FOLLOW_UPS)].format(call)


def dialogue(header: str, answers: list[tuple[str, str]], count: TokenCounter) -> str | None:
    """Answered turns, then one more question with the assistant's turn left open; None if under two answers fit."""
    text = header
    for turn, (call, answer) in enumerate(answers):
        asked = f"{text}User: {question(turn, call)}\nAssistant:"
        answered = f"{asked} {answer}\n\n"
        if turn == len(answers) - 1 or turn == MAX_ANSWERS or count(answered) > PASSAGE_TOKENS:
            return asked if turn >= 2 else None
        text = answered
    return None


def multi_turn(modules, count: TokenCounter, n: int) -> list[dict]:
    candidates = []
    for relative, tree, _ in modules:
        name = module_name(relative)
        summary = (ast.get_docstring(tree) or "").strip().split("\n")[0].rstrip(".")
        about = f"the `{name}` module ({summary})" if 0 < len(summary) <= 80 else f"the `{name}` module"
        header = f"A conversation between a user and an assistant who knows the Python standard library well, about {about}.\n\n"
        prompt = dialogue(header, documented_callables(name, tree, count), count)
        if prompt and MIN_TOKENS <= count(prompt) <= MAX_TOKENS:
            candidates.append(row("multi_turn", prompt, f"stdlib/{relative}"))
    return spread(candidates, n)


# --- summarization ----------------------------------------------------------------

SUMMARY_CUES = ("Summary:", "TL;DR:")
SUMMARY_MIN_PASSAGE = 250  # a summary of a few sentences is mostly a copy of them


def summarization(sections, count: TokenCounter, n: int, exclude: set[str]) -> list[dict]:
    candidates = []
    for topic, heading, text in sections:
        passage = fit_paragraphs(paragraphs(text), count)
        if heading not in exclude and count(passage) >= SUMMARY_MIN_PASSAGE:
            candidates.append((passage, doc_source(topic, heading)))
    return [
        row("summarization", f"{passage}\n\n{SUMMARY_CUES[i % len(SUMMARY_CUES)]}", source)
        for i, (passage, source) in enumerate(spread(candidates, n))
    ]


# --- qa ---------------------------------------------------------------------------

# (where, anchor, question, evidence): `where` is a reference section's heading or a license's
# source; the passage starts at the paragraph holding `anchor` (a section starts at its heading),
# and `evidence`, the answer's wording, must fall inside the passage.
QA_SPECS = (
    ('The "assert" statement', None,
     'What is the value of "__debug__" when optimization is requested?',
     '"False" when optimization is requested'),
    ('The "break" statement', None,
     'If a "for" loop is terminated by "break", what value does the loop control target keep?',
     "keeps its current value"),
    ('The "del" statement', None,
     "What exception is raised when deleting a name that is unbound?",
     '"NameError" exception will be raised'),
    ('The "global" statement', None,
     'Does a "global" statement in a string passed to "exec()" affect the code block containing the call?',
     "does not affect the code block"),
    ('The "return" statement', None,
     'In a generator function, which exception does a "return" statement cause to be raised?',
     'cause "StopIteration" to be raised'),
    ("Integer literals", None,
     "Why are leading zeros not allowed in a non-zero decimal number?",
     "disambiguation with C-style octal literals"),
    ("The power operator", None,
     'What does "10**-2" return?',
     '"10**-2" returns "0.01"'),
    ("Truth Value Testing", None,
     "Which Boolean operations always return one of their operands?",
     '"or" and "and" always return one of their operands'),
    ("Set types", None,
     "Which built-in constructor creates an immutable set?",
     '"frozenset()" constructor'),
    ("Dictionaries", None,
     "Where does a key go in the order when it is removed and then inserted again?",
     "add it to the end"),
    ("Modules", None,
     "In CPython, when is a module's dictionary cleared?",
     "module falls out of scope"),
    ("Frame objects", None,
     "Which frame attribute holds the code object being executed?",
     '"f_code" is the code object being executed'),
    ("Tuples", None,
     "Is it the comma or the parentheses that makes a tuple?",
     "it is actually the comma which makes a tuple"),
    ("Ranges", None,
     'What happens if the step argument of "range" is zero?',
     '"ValueError" is raised'),
    ("Future statements", None,
     "Which feature is the only one that requires the future statement?",
     'the future statement is "annotations"'),
    ("Dictionary view objects", None,
     "Since which Python version can dictionary views be reversed?",
     "Changed in version 3.8: Dictionary views are now reversible"),
    (f"{COMMON_LICENSES}/Apache-2.0", "3. Grant of Patent License",
     "If You sue claiming that the Work infringes a patent, when do Your patent licenses for the Work terminate?",
     "as of the date such litigation is filed"),
    (f"{COMMON_LICENSES}/GPL-3", "8. Termination.",
     "After a first notice of violation, within how many days must it be cured to reinstate the license permanently?",
     "prior to 30 days after your receipt of the notice"),
    (f"{COMMON_LICENSES}/MPL-2.0", "5. Termination",
     "When do the rights granted under this License terminate automatically?",
     "terminate automatically if You fail to comply with any of its terms"),
    (f"{COMMON_LICENSES}/BSD", "Copyright (c) The Regents",
     "May the name of the University be used to promote products derived from this software?",
     "without specific prior written permission"),
    ("stdlib/LICENSE.txt", "A. HISTORY OF THE SOFTWARE",
     "Python was created as a successor of which language?",
     "as a successor of a language called ABC"),
    (f"{COMMON_LICENSES}/CC0-1.0", "Statement of Purpose",
     "What do certain owners wish to do with their rights to a Work?",
     "permanently relinquish those rights"),
    (f"{COMMON_LICENSES}/GPL-2", "Preamble",
     "When the license speaks of free software, does it refer to freedom or to price?",
     "referring to freedom, not price"),
    (f"{COMMON_LICENSES}/GFDL-1.2", "0. PREAMBLE",
     "What kind of document is this License meant to make free?",
     'a manual, textbook, or other functional and useful document "free"'),
)


def qa_passage(text: str, anchor: str | None, count: TokenCounter) -> str:
    paras = paragraphs(text)
    start = next((i for i, p in enumerate(paras) if anchor is None or anchor in p), len(paras))
    return fit_paragraphs(paras[start:], count).strip()


def qa(sections, licenses, count: TokenCounter, n: int) -> list[dict]:
    texts = {heading: (doc_source(topic, heading), text) for topic, heading, text in sections}
    texts.update((source, (source, text)) for source, text in licenses)
    rows = []
    for where, anchor, question, evidence in QA_SPECS:
        if where not in texts:
            print(f"qa: skipped, no {where} on this machine")
            continue
        source, text = texts[where]
        passage = qa_passage(text, anchor, count)
        if squash(evidence) not in squash(passage):
            print(f"qa: skipped {where}: the answer is not in the passage")
            continue
        rows.append(row("qa", f"{passage}\n\nQuestion: {question}\nAnswer:", source))
    # Reference sections and licenses alternate, so that any prefix of the set has both.
    docs = [r for r in rows if r["source"].startswith("pydoc")]
    return spread(interleave(docs, [r for r in rows if r not in docs]), n)


# --- code_completion --------------------------------------------------------------

COMPLETION_TOKENS = (320, 1500)  # whole definitions; the prompt is a little over half of one


def completion_head(source: str, count: TokenCounter) -> str | None:
    """The definition cut at a line boundary a little past its middle, before a non-blank line; None if too short."""
    lines = source.splitlines(keepends=True)
    limit = min(0.6 * count(source, code=True), MAX_TOKENS - 100)
    head = None
    for k in range(1, len(lines)):
        prefix = "".join(lines[:k])
        if count(prefix, code=True) > limit:
            break
        if lines[k].strip():  # the continuation should start with code, not a blank line
            head = prefix
    return head if head and count(head, code=True) >= MIN_TOKENS else None


def code_in_range(source: str, count: TokenCounter, low: int, high: int) -> bool:
    # Characters bound tokens loosely either way; the cheap check spares the tokenizer most definitions.
    return 2 * low <= len(source) <= 6 * high and low <= count(source, code=True) <= high


def code_completion(modules, count: TokenCounter, n: int) -> list[dict]:
    candidates = []
    for relative, tree, lines in modules:
        for _, node in definitions(tree):
            source = source_of(node, lines)
            head = completion_head(source, count) if code_in_range(source, count, *COMPLETION_TOKENS) else None
            if head:
                candidates.append(row("code_completion", head, f"stdlib/{relative}"))
                break  # one definition per file, for variety
    return spread(candidates, n)


# --- code_editing -----------------------------------------------------------------

EDITING_TOKENS = (140, 560)  # the prompt holds the function once, plus the request and a first line
_SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+")


def camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def rename_edit(node, source: str) -> tuple[str, str] | None:
    """Rename a snake_case parameter or local used at least three times to camelCase."""
    params = [a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)]
    stores = [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    for old in dict.fromkeys(params + stores):
        new = camel(old)
        if _SNAKE.fullmatch(old) and len(re.findall(rf"\b{old}\b", source)) >= 3 and new not in source:
            first = re.sub(rf"\b{old}\b", new, source.splitlines()[0])
            return f"# The same function with the variable {old} renamed to {new}:", first + "\n"
    return None


def docstring_edit(node, source: str) -> tuple[str, str] | None:
    if ast.get_docstring(node) is None and len(source.splitlines()) >= 6:
        return "# The same function with a docstring added:", source.splitlines()[0] + "\n"
    return None


def type_hints_edit(node, source: str) -> tuple[str, str] | None:
    """The edited copy starts at the open parenthesis: the parameters are where the hints go."""
    args = [a for a in ast.walk(node.args) if isinstance(a, ast.arg)]
    if node.returns or any(a.annotation for a in args) or not [a for a in args if a.arg not in ("self", "cls")]:
        return None
    lines = source.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if re.match(r"\s*(async\s+)?def\s", line))
    return "# The same function with type hints added:", "".join(lines[:at]) + lines[at][: lines[at].index("(") + 1]


def comments_edit(node, source: str) -> tuple[str, str] | None:
    if len(re.findall(r"(?m)^\s*#", source)) >= 2:
        return "# The same function without its comments:", source.splitlines()[0] + "\n"
    return None


EDITS = (rename_edit, docstring_edit, type_hints_edit, comments_edit)


def edit_candidates(modules, edit, count: TokenCounter, exclude: set[str]) -> list[dict]:
    """The first function of each file (outside `exclude`) that the edit applies to, as a prompt."""
    out = []
    for relative, tree, lines in modules:
        if f"stdlib/{relative}" in exclude:
            continue
        for _, node in definitions(tree):
            source = source_of(node, lines)
            if isinstance(node, ast.ClassDef) or not code_in_range(source, count, *EDITING_TOKENS):
                continue
            request = edit(node, source)
            if request:
                instruction, first = request
                out.append(row("code_editing", f"{source}\n\n{instruction}\n{first}", f"stdlib/{relative}"))
                break
    return out


def code_editing(modules, count: TokenCounter, n: int, exclude: set[str]) -> list[dict]:
    per_edit = -(-n // len(EDITS))
    used, groups = set(exclude), []
    for edit in EDITS:
        chosen = spread(edit_candidates(modules, edit, count, used), per_edit)
        used.update(r["source"] for r in chosen)  # each file serves one edit only
        groups.append(chosen)
    return interleave(*groups)[:n]


# --- rewriting --------------------------------------------------------------------

REWRITE_CUES = (
    "The same text in plain words:",
    "The same text rewritten in the passive voice:",
    "The same text as a bulleted list:",
)
REWRITE_MIN_PASSAGE = 180


def leading_passages(texts: list[tuple[str, str]], count: TokenCounter) -> list[tuple[str, str]]:
    """(passage, source): each text's leading paragraphs within the budget, where they are long enough to rewrite."""
    out = []
    for source, text in texts:
        passage = fit_paragraphs(paragraphs(text), count).strip()
        if count(passage) >= REWRITE_MIN_PASSAGE:
            out.append((passage, source))
    return out


def rewriting(modules, licenses, count: TokenCounter, n: int, exclude: set[str]) -> list[dict]:
    legal = spread(leading_passages([(s, t) for s, t in licenses if s not in exclude], count), n // 2)
    docs = leading_passages([(f"stdlib/{rel}", ast.get_docstring(tree) or "") for rel, tree, _ in modules], count)
    # Module docstrings make up the rest when this machine has few distinct licenses.
    chosen = interleave(legal, spread(docs, n - len(legal)))
    return [
        row("rewriting", f"{passage}\n\n{REWRITE_CUES[i % len(REWRITE_CUES)]}", source)
        for i, (passage, source) in enumerate(chosen)
    ]


# --- main -------------------------------------------------------------------------


def write(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tokenizer", help="Gemma 3 .gguf file or tokenizer.json for exact token counts (else estimated from characters)"
    )
    parser.add_argument("--count", type=int, default=24, help="prompts per category")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the .jsonl files")
    args = parser.parse_args()
    count = TokenCounter(args.tokenizer)
    modules, sections, licenses = stdlib_modules(), doc_sections(), license_texts()
    completion = code_completion(modules, count, args.count)
    # QA's passages stay out of the other categories, and the two code sets use different files.
    qa_sources = {where for where, *_ in QA_SPECS}
    sets = {
        "multi_turn": multi_turn(modules, count, args.count),
        "summarization": summarization(sections, count, args.count, exclude=qa_sources),
        "qa": qa(sections, licenses, count, args.count),
        "code_completion": completion,
        "code_editing": code_editing(modules, count, args.count, exclude={r["source"] for r in completion}),
        "rewriting": rewriting(modules, licenses, count, args.count, exclude=qa_sources),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"token counts: {count.how}")
    for name, rows in sets.items():
        write(args.out / f"{name}.jsonl", rows)
        lengths = [count(r["prompt"], code=name.startswith("code")) for r in rows]
        outside = sum(not MIN_TOKENS <= t <= MAX_TOKENS for t in lengths)
        note = f", {outside} outside {MIN_TOKENS}-{MAX_TOKENS}" if outside else ""
        print(f"wrote {len(rows)} prompts to {args.out / name}.jsonl: {min(lengths, default=0)}-{max(lengths, default=0)} tokens{note}")


if __name__ == "__main__":
    main()
