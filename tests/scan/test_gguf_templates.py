"""GGUF chat templates judged on Jinja2's syntax tree: CVE-2024-34359-class payloads are
dangerous however they spell the attribute name; mainstream templates stay clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightvault.scan import Severity, scan_file
from weightvault.scan.formats.chat_template import judge_template

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}"
    "{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + "
    "message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{'<start_of_turn>model\\n'}}{% endif %}"
)
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + "
    "message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + "
    "message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)
#: Tool-calling templates: namespaces, slices, index arithmetic, tojson, items, selectattr.
LLAMA31_TOOLS = """{{- bos_token }}
{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}
{%- if not tools_in_user_message is defined %}{%- set tools_in_user_message = true %}{%- endif %}
{%- if not date_string is defined %}{%- set date_string = "26 Jul 2024" %}{%- endif %}
{%- if not tools is defined %}{%- set tools = none %}{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}{%- set system_message = "" %}{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") }}
{%- endif %}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {%- for t in tools %}{{- t | tojson(indent=4) }}{{- "\\n\\n" }}{%- endfor %}
{%- endif %}
{{- system_message }}{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'
            + message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}{{- ", " }}{%- endif %}
            {%- endfor %}
            {{- ")" }}
        {%- else %}
            {{- '{"name": "' + tool_call.name + '", "parameters": ' }}
            {{- tool_call.arguments | tojson }}{{- "}" }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping %}{{- message.content | tojson }}
        {%- else %}{{- message.content }}{%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}"""
QWEN_TOOLS = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}
    {%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
    {{- "\\n\\n# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}{{- tool_call.name }}
            {{- '", "arguments": ' }}{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}{{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""
DEEPSEEK_NAMESPACE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{% set ns = namespace(is_first=false, is_tool=false, system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{ bos_token }}"
    "{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{%- set ns.is_tool = false -%}{{'<User>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is none %}"
    "{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}{{'<tool>' + tool['type']"
    " + '<sep>' + tool['function']['name'] + '\\n' + tool['function']['arguments']}}"
    "{%- set ns.is_first = true -%}{%- endif %}{%- endfor %}{%- endif %}{%- endfor %}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<Assistant>'}}{% endif %}"
)
#: Less common but benign constructs: macros, dict lookups by data keys, selectattr on data,
#: loop controls, ``{% generation %}`` markers, string methods, ``%`` formatting.
MISC_BENIGN = (
    "{% macro render(content) %}{% if content is string %}{{ content }}{% else %}"
    "{% for part in content %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% endmacro %}"
    "{% set roles = {'user': 'USER', 'assistant': 'ASSISTANT'} %}"
    "{% for message in messages | selectattr('role', 'ne', 'system') %}"
    "{{ roles[message['role']] }}: {{ render(message['content']) }}"
    "{% for key in message %}{{ message[key] if key == 'name' else '' }}{% endfor %}"
    "{% if loop.index > 100 %}{% break %}{% endif %}{% endfor %}"
    "{% generation %}{{ '%s-%d' % ('x', 3) }}{% endgeneration %}"
    "{{ messages | map(attribute='role') | join(',') }}{{ (messages | last).content.strip() }}"
    "{{ messages | sort(attribute='role') | length }}{{ '{} {}'.format('a', 'b') }}"
)
BENIGN = {
    "chatml": CHATML, "llama3": LLAMA3, "mistral": MISTRAL, "gemma": GEMMA, "phi3": PHI3,
    "llama31-tools": LLAMA31_TOOLS, "qwen-tools": QWEN_TOOLS, "deepseek": DEEPSEEK_NAMESPACE,
    "misc": MISC_BENIGN,
}

MALICIOUS = {
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "attr-concat": "{{ cycler|attr('__init__')|attr('__glo'~'bals__') }}",
    "attr-escapes": "{{ request|attr('application')|attr('\\x5f\\x5fglobals\\x5f\\x5f')"
                    "|attr('\\x5f\\x5fgetitem\\x5f\\x5f')('\\x5f\\x5fbuiltins\\x5f\\x5f') }}",
    "attr-from-request": "{{ request|attr(request.args.name) }}",
    "subscript-escapes": "{{ ''['\\x5f\\x5fclass\\x5f\\x5f'] }}",
    "subscript-built": "{{ x[('_' * 2) ~ 'class' ~ ('_' * 2)] }}",
    "subscript-join": "{{ x[['', '_class__']|join('_')] }}",
    "subscript-reverse": "{{ x['__ssalc__'|reverse] }}",
    "subscript-lower": "{{ x['__CLASS__'|lower] }}",
    "subscript-format-filter": "{{ x['%sclass%s'|format('__', '__')] }}",
    "subscript-replace": "{{ x['XXclassXX'|replace('X', '_')] }}",
    "set-variable": "{% set a = '__glo' %}{% set b = 'bals__' %}{{ lipsum|attr(a ~ b) }}",
    "set-block": "{% set k %}__class__{% endset %}{{ x[k] }}",
    "namespace": "{% set ns = namespace(k='__class__') %}{{ x[ns.k] }}",
    "namespace-assign": "{% set ns = namespace(k='a') %}{% set ns.k = '__class__' %}{{ x[ns.k] }}",
    "macro-argument": "{% macro m(k) %}{{ x[k] }}{% endmacro %}{{ m('__cl' ~ 'ass__') }}",
    "with": "{% with k = '__class__' %}{{ x[k] }}{% endwith %}",
    "loop-literal": "{% for k in ['__class__'] %}{{ x[k] }}{% endfor %}",
    "map-attr": "{{ messages|map('attr', '__class__')|list }}",
    "map-attribute": "{{ messages|map(attribute='role.__class__')|list }}",
    "selectattr": "{{ messages|selectattr('__class__')|list }}",
    "sort-attribute-computed": "{{ messages|sort(attribute=messages[0].role)|list }}",
    "format-fields": "{{ '{0.__class__.__mro__}'.format(x) }}",
    "format-computed": "{{ (x ~ '{0}').format(y) }}",
    "self-context": "{{ self._TemplateReference__context }}",
    "globals-os": "{{ namespace.__init__.__globals__.os.popen('id').read() }}",
    "lipsum": "{{ lipsum.__globals__['os'].popen('touch pwned').read() }}",
    "mro-method": "{{ x.mro() }}",
    "frame": "{{ x.gi_frame.f_globals }}",
    "attr-dyn-args": "{{ x|attr(*names) }}",
    "map-computed-filter": "{{ messages|map(f, 'x')|list }}",
}


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_mainstream_templates_are_clean(name: str) -> None:
    assert judge_template(BENIGN[name]) == []


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_template_injection_payloads_are_dangerous(name: str) -> None:
    verdicts = judge_template(MALICIOUS[name])
    assert any(v.dangerous for v in verdicts), (name, verdicts)


@pytest.mark.parametrize("source", ["{% for x in %}", "{{ x", "{% endif %}", "{{ x | }}"])
def test_templates_that_do_not_parse_are_errors(source: str) -> None:
    with pytest.raises(ValueError, match="does not parse"):
        judge_template(source)


def test_loading_other_templates_is_unknown() -> None:
    verdicts = judge_template("{% include 'other.j2' %}{% import 'm.j2' as m %}")
    assert verdicts and not any(v.dangerous for v in verdicts)


def test_benign_templates_render_with_the_sandbox_and_payloads_are_refused_by_it() -> None:
    """The static verdict agrees with Jinja2's ImmutableSandboxedEnvironment on the samples:
    benign templates render; the constant-name payloads raise SecurityError there."""
    from jinja2 import StrictUndefined
    from jinja2.exceptions import SecurityError, UndefinedError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = lambda message: ""
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    for name in ("chatml", "llama3", "mistral", "gemma", "phi3", "qwen-tools", "deepseek"):
        out = env.from_string(BENIGN[name]).render(
            messages=messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
        assert "hi" in out, name
    strict = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    for name in ("subclasses", "subscript-escapes", "subscript-built", "format-fields",
                 "lipsum", "attr-concat", "namespace"):
        with pytest.raises((SecurityError, UndefinedError)):
            strict.from_string(MALICIOUS[name]).render(x="", messages=messages)


def _gguf(path: Path, template: str) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_chat_template(template)
    writer.add_tensor("w", np.zeros((2, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_files_with_templates(tmp_path: Path) -> None:
    benign = tmp_path / "benign.gguf"
    _gguf(benign, LLAMA31_TOOLS)
    result = scan_file(benign)
    assert (result.status, result.findings, result.errors) == ("safe", (), ())
    evil = tmp_path / "evil.gguf"
    _gguf(evil, MALICIOUS["attr-concat"])
    result = scan_file(evil)
    assert result.max_severity == Severity.DANGEROUS
    assert any(f.kind == "template" and "__globals__" in f.subject for f in result.findings)
    broken = tmp_path / "broken.gguf"
    _gguf(broken, "{% for x in %}")
    result = scan_file(broken)
    assert result.status == "error" and "does not parse" in result.errors[0]


def test_the_cve_payload_really_runs_in_an_unsandboxed_environment(tmp_path: Path) -> None:
    """The payload class is live: rendered by plain jinja2.Environment (what llama-cpp-python
    did before CVE-2024-34359 was fixed) in a child process, it creates the marker file."""
    marker = tmp_path / "pwned"
    template = ("{% set g = cycler|attr('__init__')|attr('__glo' ~ 'bals__') %}"
                "{{ g['o' ~ 's'].open('" + str(marker) + "', 65).__int__() }}")
    assert any(v.dangerous for v in judge_template(template))
    code = ("import jinja2, sys\n"
            "jinja2.Environment().from_string(sys.argv[1]).render(messages=[])\n")
    subprocess.run([sys.executable, "-c", code, template], check=True, timeout=60,
                   capture_output=True)
    assert marker.exists()


_NAME_PIECES = st.sampled_from(["_", "__", "class", "globals", "init", "x", "cl", "ass", "bals",
                                "glo", "\\x5f"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_NAME_PIECES, min_size=1, max_size=5),
       form=st.sampled_from(["attr", "subscript", "map", "set-attr"]))
def test_any_spelling_of_an_underscore_name_is_dangerous(pieces: list[str], form: str) -> None:
    """Names assembled from pieces with ~: dangerous exactly when the assembled (unescaped)
    name starts with an underscore; never an internal error."""
    expr = " ~ ".join(f"'{p}'" for p in pieces)
    templates = {
        "attr": f"{{{{ x|attr({expr}) }}}}",
        "subscript": f"{{{{ x[{expr}] }}}}",
        "map": f"{{{{ xs|map(attribute={expr})|list }}}}",
        "set-attr": f"{{% set n = {expr} %}}{{{{ x|attr(n) }}}}",
    }
    name = "".join(pieces).replace("\\x5f", "_")
    verdicts = judge_template(templates[form])
    assert any(v.dangerous for v in verdicts) == name.startswith("_"), (templates[form],
                                                                          verdicts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="{}%#()[]|~'\"._ xyzattrsetforin\\\n0123", max_size=80))
def test_arbitrary_text_parses_or_fails_with_one_line(source: str) -> None:
    try:
        judge_template(source)
    except ValueError as exc:
        assert "\n" not in str(exc)
