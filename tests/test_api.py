"""jaxspec.generate (loaded models and text in, text out, any method by name) and apply_chat_template,
against the engine's own entry and against transformers' chat templates."""

from __future__ import annotations

import json

import pytest

import jaxspec
from jaxspec import InputError, MethodOptions, SamplingConfig
from jaxspec.methods import build_drafter
from tests.hf_factory import make_hf_model


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    path = tmp_path_factory.mktemp("target")
    make_hf_model("llama", path, seed=0)
    return jaxspec.load(path)


@pytest.fixture(scope="module")
def draft_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("draft")
    make_hf_model("llama", path, seed=1, num_hidden_layers=1)
    return path


def _plain(target, ids, **kw):
    return jaxspec.generate_ids(target.model, target.params, ids, stop_ids=target.eos_ids,
                                max_positions=target.model.max_positions, **kw)


def test_the_top_level_generate_is_the_text_api():
    assert jaxspec.generate.__module__ == "jaxspec.api"
    assert jaxspec.generate_ids.__module__ == "jaxspec.generate"


def test_text_in_text_out_matches_the_engine(target):
    prompts = ["def add(a, b):", "the quick brown"]
    out = jaxspec.generate(target, prompts, max_new_tokens=8, verbose=False)
    ids = [target.tokenizer.encode(p) for p in prompts]
    plain = _plain(target, ids, max_new_tokens=8)
    assert [c.output_ids for c in out] == [g.output_ids for g in plain]
    assert [c.text for c in out] == [target.tokenizer.decode(g.output_ids) for g in plain]
    assert all(c.tokens_per_call == 1.0 for c in out)
    # One prompt in, one Completion out; token ids work as a prompt too.
    one = jaxspec.generate(target, prompts[0], max_new_tokens=8, verbose=False)
    assert isinstance(one, jaxspec.Completion) and one.output_ids == plain[0].output_ids
    assert jaxspec.generate(target, ids[1], max_new_tokens=8, verbose=False).output_ids == plain[1].output_ids
    assert [c.output_ids for c in jaxspec.generate(target, ids, max_new_tokens=8, verbose=False)] == \
        [g.output_ids for g in plain]


def test_sampling_draws_what_the_engine_draws_with_the_same_seeds(target):
    prompts = ["import os", "for i in"]
    out = jaxspec.generate(target, prompts, max_new_tokens=10, temperature=0.9, top_k=20, seed=7, verbose=False)
    plain = _plain(target, [target.tokenizer.encode(p) for p in prompts], max_new_tokens=10,
                   sampling=SamplingConfig(0.9, 20), seed=7)
    assert [c.output_ids for c in out] == [g.output_ids for g in plain]


@pytest.mark.parametrize("method, options", [
    ("prompt-lookup", dict(num_draft_tokens=3)),
    ("prompt-lookup", dict(lookup_branches=2, num_draft_tokens=2)),
    ("jacobi", dict(window=3)),
    ("token-recycling", dict(tree_size=4)),
])
def test_methods_by_name_keep_greedy_output(target, method, options):
    prompt = "def add(a, b):\n    return a + b\ndef add(a, b):"
    plain = jaxspec.generate(target, prompt, max_new_tokens=12, verbose=False)
    spec = jaxspec.generate(target, prompt, method=method, max_new_tokens=12, verbose=False, **options)
    assert spec.output_ids == plain.output_ids


def test_a_draft_model_given_as_a_path_or_loaded(target, draft_dir):
    prompt = "the quick brown fox"
    plain = jaxspec.generate(target, prompt, max_new_tokens=10, verbose=False)
    for draft in (draft_dir, jaxspec.load(draft_dir)):
        spec = jaxspec.generate(target, prompt, method="draft-model", draft=draft, num_draft_tokens=3,
                                max_new_tokens=10, verbose=False)
        assert spec.output_ids == plain.output_ids
        assert spec.target_calls <= plain.target_calls


def test_the_drafter_is_built_as_by_hand(target):
    """What generate builds inside is what a caller of the engine would build with build_drafter."""
    ids = [target.tokenizer.encode("import os\nimport sys\nimport")]
    drafter, params = build_drafter("prompt-lookup", batch=1, sampling=SamplingConfig(), num_draft_tokens=4,
                                    target_vocab=target.model.vocab_size)
    by_hand = _plain(target, ids, max_new_tokens=10, drafter=drafter, drafter_params=params)
    out = jaxspec.generate(target, ids[0], method="prompt-lookup", num_draft_tokens=4, max_new_tokens=10, verbose=False)
    assert (out.output_ids, out.accept_lengths) == (by_hand[0].output_ids, by_hand[0].accept_lengths)


@pytest.mark.parametrize("call, message", [
    (dict(method="prompt-lookup", num_draft_token=3), "unknown method option 'num_draft_token'"),
    (dict(method="prompt-lookup", draft="x"), "a draft model is for method draft-model"),
    (dict(method="draft-model"), "needs a draft model"),
    (dict(method="beam"), "unknown method 'beam'"),
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(max_new_tokens=0), "max-new-tokens must be a positive integer"),
    (dict(prompts=[3.5]), "prompt 0 is neither a string nor a list of token ids"),
    (dict(prompts=[[1, 2], [10**6]]), "outside the vocabulary"),
])
def test_bad_requests_raise_input_errors(target, call, message):
    call = {"prompts": "hello", **call}
    with pytest.raises(InputError, match=message):
        jaxspec.generate(target, call.pop("prompts"), verbose=False, **call)


def test_text_needs_a_tokenizer(target):
    bare = jaxspec.LoadedModel(target.model, target.params, target.hf_config, target.source, "hf", None, (), {})
    with pytest.raises(InputError, match="no tokenizer.json; give token ids"):
        jaxspec.generate(bare, "hello", verbose=False)
    assert jaxspec.generate(bare, [5, 6], max_new_tokens=3, verbose=False).text is None


def test_method_options_from_keywords_name_the_cli_flags():
    assert MethodOptions.from_keywords({"tree_size": 8}).tree_size == 8
    with pytest.raises(InputError, match="choose from"):
        MethodOptions.from_keywords({"treesize": 8})


# Chat templates as checkpoints carry them: Gemma's (system folded into the first user turn, roles checked),
# ChatML (Qwen's), and one using transformers' extensions (loop controls, tojson, a generation block).
GEMMA = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first = '' -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first if loop.first else '') }}{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
EXTENDED = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}"
    "{{ m['role'] }}: {% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{% endgeneration %}"
    "{% else %}{{ m['content'] }}{% endif %}{{ eos_token }}\n{% endfor %}"
    "{% if tools %}tools: {{ tools | tojson }}\n{% endif %}{% if add_generation_prompt %}assistant:{% endif %}"
)
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "  Write add(a, b) in Python.  "},
    {"role": "assistant", "content": "def add(a, b): return a + b"},
    {"role": "user", "content": "Now für floats — ünïcode too."},
]


def _with_template(target, tmp_path, template, where: str):
    config = {"bos_token": "<s>", "eos_token": {"content": "</s>", "special": True}, "pad_token": "<pad>"}
    side = dict(target.side_files)
    if where == "jinja":
        side["chat_template.jinja"] = template.encode()
    else:
        config["chat_template"] = template if where == "config" else [
            {"name": "tool_use", "template": "unused"}, {"name": "default", "template": template}]
    side["tokenizer_config.json"] = json.dumps(config).encode()
    (tmp_path / "tokenizer.json").write_bytes(target.side_files["tokenizer.json"])
    return jaxspec.LoadedModel(target.model, target.params, target.hf_config, target.source, "hf", target.tokenizer,
                               target.eos_ids, side)


def _transformers(tmp_path, template):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>")
    tok.chat_template = template
    return tok


@pytest.mark.parametrize("template, where", [(GEMMA, "config"), (CHATML, "jinja"), (EXTENDED, "named")])
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_chat_templates_render_as_transformers_renders_them(target, tmp_path, template, where, generation_prompt):
    lm = _with_template(target, tmp_path, template, where)
    hf = _transformers(tmp_path, template)
    kw = dict(tools=[{"name": "add", "description": "adds"}]) if template is EXTENDED else {}
    text = jaxspec.apply_chat_template(lm, CHAT, add_generation_prompt=generation_prompt, tokenize=False, **kw)
    assert text == hf.apply_chat_template(CHAT, add_generation_prompt=generation_prompt, tokenize=False, **kw)
    ids = jaxspec.apply_chat_template(lm, CHAT, add_generation_prompt=generation_prompt, **kw)
    expected = hf.apply_chat_template(CHAT, add_generation_prompt=generation_prompt, tokenize=True, **kw)
    assert ids == list(expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected)
    out = jaxspec.generate(lm, ids, max_new_tokens=4, verbose=False)
    assert out.prompt_ids == ids


def test_chat_template_errors(target, tmp_path):
    with pytest.raises(InputError, match="has no chat template"):
        jaxspec.apply_chat_template(target, CHAT)
    lm = _with_template(target, tmp_path, GEMMA, "config")
    with pytest.raises(InputError, match="Conversation roles must alternate"):
        jaxspec.apply_chat_template(lm, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(InputError, match="a chat is a non-empty list of messages"):
        jaxspec.apply_chat_template(lm, [])
    broken = _with_template(target, tmp_path, "{% for m in messages %}", "config")
    with pytest.raises(jaxspec.CheckpointError, match="unreadable chat template"):
        jaxspec.apply_chat_template(broken, CHAT)


def test_the_chat_template_travels_with_a_conversion(target, tmp_path):
    lm = _with_template(target, tmp_path, CHATML, "jinja")
    jaxspec.save(lm, tmp_path / "converted")
    again = jaxspec.load(tmp_path / "converted")
    assert jaxspec.apply_chat_template(again, CHAT, tokenize=False) == jaxspec.apply_chat_template(lm, CHAT, tokenize=False)
