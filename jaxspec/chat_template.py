"""A checkpoint's chat template, rendered as Hugging Face's apply_chat_template renders it, without transformers.

The template is the Jinja source in tokenizer_config.json ("chat_template": a string, or a list of named
templates of which "default" is used) or in chat_template.jinja beside it (where transformers 5 saves it).
It renders in the same sandboxed environment transformers uses (trim_blocks, lstrip_blocks, loop controls,
`raise_exception`, `strftime_now`, a `tojson` that keeps non-ASCII text) with the tokenizer's special tokens
as variables, so a template written for transformers renders the same text here; the tests check that
against transformers. The rendered text carries its own special tokens (a BOS), so it is encoded without
the post-processor's.
"""

from __future__ import annotations

import datetime
import functools
import json
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from jaxspec.errors import CheckpointError, InputError

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for transformers' masks; it renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _raise(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=8)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(source)


def find_template(side_files: Mapping[str, bytes]) -> tuple[str | None, dict]:
    """(the template source or None, tokenizer_config.json as a dict) from a checkpoint's side files."""
    config = json.loads(side_files["tokenizer_config.json"]) if "tokenizer_config.json" in side_files else {}
    if "chat_template.jinja" in side_files:
        return side_files["chat_template.jinja"].decode(), config
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
        template = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}.get("default")
    return (template if isinstance(template, str) else None), config


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json gives it: a string or an AddedToken dict."""
    return value.get("content") if isinstance(value, dict) else value


def render(source: str, config: Mapping[str, Any], messages: Sequence[Mapping[str, Any]], *,
           add_generation_prompt: bool = True, **variables) -> str:
    """The chat as text. `messages`: [{"role": ..., "content": ...}, ...]; `variables` reach the template
    (tools=..., documents=..., enable_thinking=...). A template that rejects the chat raises InputError."""
    if not messages or not all(isinstance(m, Mapping) and "role" in m for m in messages):
        raise InputError('a chat is a non-empty list of messages {"role": ..., "content": ...}')
    specials = {name: _token_text(config[name]) for name in SPECIAL_TOKENS if config.get(name) is not None}
    try:
        template = _compile(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise CheckpointError(f"unreadable chat template ({e})") from None
    try:
        return template.render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **specials, **variables
        )
    except jinja2.exceptions.TemplateError as e:
        raise InputError(f"the chat template rejects these messages: {e}") from None
