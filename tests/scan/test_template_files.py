"""Chat templates outside GGUF (tokenizer_config.json, chat_template.json, processor_config.json,
*.jinja) are judged like GGUF's: findings name the file and the JSON path, malformed files are
errors, and other JSON files are not parsed at all."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from corpus_benign import CHAT_TEMPLATES, LLAMA3_TOOLS_TEMPLATE, transformers_template

from weightvault.errors import InputError, UnsafeFileError
from weightvault.scan import Severity, describe, scan_file, scan_paths, verify_paths

PAYLOAD = "{{ cycler.__init__.__globals__.os.system('id') }}"
COMPUTED = "{% set n = '_' ~ '_globals_' ~ '_' %}{{ (lipsum|attr(n)).os }}"
INCLUDE = "{% include 'other.jinja' %}"


def _write(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def test_list_of_named_templates_names_the_json_path(tmp_path: Path) -> None:
    path = _write(tmp_path / "tokenizer_config.json", {"chat_template": [
        {"name": "default", "template": CHAT_TEMPLATES["chatml"]},
        {"name": "tool_use", "template": COMPUTED}]})
    result = scan_file(path, display="tokenizer_config.json")
    assert result.format == "chat-template" and not result.errors
    (finding,) = result.findings
    assert finding.severity == Severity.DANGEROUS and finding.kind == "template"
    assert finding.location == "chat_template[1].template"
    line = describe(finding)
    assert line.startswith("tokenizer_config.json: dangerous template")
    assert "at chat_template[1].template: tokenizer_config.json: chat_template[1].template:" in line


@pytest.mark.parametrize(("name", "document", "where"), [
    ("tokenizer_config.json", {"chat_template": PAYLOAD}, "chat_template"),
    ("chat_template.json", {"chat_template": PAYLOAD}, "chat_template"),
    ("processor_config.json", {"processor_class": "P", "chat_template": PAYLOAD}, "chat_template"),
    ("tokenizer_config.json", {"chat_template": {"default": "{{ x }}", "rag": PAYLOAD}},
     "chat_template.rag"),
    ("chat_template.jinja", PAYLOAD, "."),
    ("additional_chat_templates/tool_use.jinja", PAYLOAD, "."),
])
def test_every_template_file_form_is_judged(
    tmp_path: Path, name: str, document: object, where: str
) -> None:
    result = scan_file(_write(tmp_path / name, document))
    assert not result.errors
    assert result.status == "dangerous"
    assert {f.location for f in result.findings} == {where}
    assert {"__init__", "__globals__"} <= {f.subject for f in result.findings}


def test_loader_directives_are_unknown_and_follow_the_policy_threshold(tmp_path: Path) -> None:
    """The same verdict classes as GGUF: include is unknown, refused at the default threshold,
    passed by the lenient one."""
    path = _write(tmp_path / "m" / "tokenizer_config.json", {"chat_template": INCLUDE})
    report = scan_paths([tmp_path / "m"])
    (finding,) = report.findings
    assert finding.severity == Severity.UNKNOWN and finding.subject == "<template loader>"
    assert report.exit_code(Severity.UNKNOWN) == 1 and report.exit_code(Severity.DANGEROUS) == 0
    with pytest.raises(UnsafeFileError, match="chat_template"):
        verify_paths([path])
    verify_paths([path], fail_on=Severity.DANGEROUS)


@pytest.mark.parametrize("template", [
    *CHAT_TEMPLATES.values(), LLAMA3_TOOLS_TEMPLATE,
    transformers_template("llama4"), transformers_template("smolvlm"),
    transformers_template("qwen2_audio"),
])
def test_mainstream_templates_pass_in_every_file_form(tmp_path: Path, template: str) -> None:
    _write(tmp_path / "a" / "tokenizer_config.json", {"chat_template": template})
    _write(tmp_path / "b" / "tokenizer_config.json",
           {"chat_template": [{"name": "default", "template": template}]})
    _write(tmp_path / "c" / "chat_template.jinja", template)
    _write(tmp_path / "d" / "chat_template.json", {"chat_template": template})
    report = scan_paths([tmp_path])
    assert [r.format for r in report.files] == ["chat-template"] * 4
    assert report.status == "safe" and not report.errors


@pytest.mark.parametrize(("name", "content", "error"), [
    ("tokenizer_config.json", "{\"chat_template\": ", "tokenizer_config.json is not valid JSON"),
    ("chat_template.json", '{"chat_template": "a", "chat_template": "b"}', "duplicate key"),
    ("processor_config.json", "[1, 2]", "a JSON object was expected, found list"),
    ("tokenizer_config.json", '{"chat_template": 5}', "neither a string nor a list"),
    ("tokenizer_config.json", '{"chat_template": [{"name": "x"}]}', "chat_template[0] is not"),
    ("tokenizer_config.json", '{"chat_template": [{"template": 1}]}',
     "chat_template[0].template is not a string"),
    ("tokenizer_config.json", '{"chat_template": "{% for %}"}', "chat template does not parse"),
    ("chat_template.jinja", "{{ messages ", "chat template does not parse"),
])
def test_malformed_files_are_errors_never_safe(
    tmp_path: Path, name: str, content: str, error: str
) -> None:
    result = scan_file(_write(tmp_path / name, content))
    assert result.status == "error" and not result.findings
    assert any(error in message for message in result.errors), result.errors
    with pytest.raises(InputError, match="could not be scanned"):
        verify_paths([tmp_path / name])


def test_non_utf8_template_and_pickle_under_a_template_name_are_errors(tmp_path: Path) -> None:
    jinja = tmp_path / "chat_template.jinja"
    jinja.write_bytes(b"{{ messages }}\xff\xfe")
    assert any("not UTF-8" in e for e in scan_file(jinja).errors)
    disguised = tmp_path / "x" / "tokenizer_config.json"
    disguised.parent.mkdir()
    disguised.write_bytes(pickle.dumps({"chat_template": "{{ x }}"}, protocol=0))
    assert scan_file(disguised).status == "error"


def test_only_template_files_are_parsed(tmp_path: Path) -> None:
    """Folder scans stay cheap: other .json files are not JSON-parsed (a broken config.json is
    not an error), and a chat_template key elsewhere is not read."""
    _write(tmp_path / "config.json", "{not json")
    _write(tmp_path / "generation_config.json", {"chat_template": PAYLOAD})
    _write(tmp_path / "tokenizer_config.json", {"bos_token": "<s>"})
    _write(tmp_path / "tokenizer_config.json.bak", "{not json")
    _write(tmp_path / "null" / "tokenizer_config.json", {"chat_template": None})
    report = scan_paths([tmp_path])
    formats = {Path(r.path).relative_to(tmp_path).as_posix(): r.format for r in report.files}
    assert formats == {"config.json": "data", "generation_config.json": "data",
                       "tokenizer_config.json": "json", "tokenizer_config.json.bak": "data",
                       "null/tokenizer_config.json": "json"}
    assert report.status == "safe" and not report.errors


def test_template_file_inside_an_archive_names_member_and_path(tmp_path: Path) -> None:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("model/tokenizer_config.json",
                     json.dumps({"chat_template": [{"name": "t", "template": COMPUTED}]}))
        out.writestr("model/chat_template.jinja", "{{ messages[0]['content'] }}")
    result = scan_file(archive)
    assert result.status == "dangerous", result
    assert {f.location for f in result.findings} == {
        "model/tokenizer_config.json:chat_template[0].template"}


def test_cli_refuses_a_model_folder_with_one_line_per_finding(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    _write(folder / "tokenizer_config.json", {"chat_template": [
        {"name": "default", "template": CHAT_TEMPLATES["llama3"]},
        {"name": "tool_use", "template": PAYLOAD}]})
    _write(folder / "chat_template.jinja", "{% for m in messages %}{{ m.content }}{% endfor %}")
    _write(folder / "broken" / "chat_template.json", "{")
    weightvault = str(Path(sys.executable).with_name("weightvault"))
    proc = subprocess.run([weightvault, "scan", "--json", str(folder)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"},
                          check=False)
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stdout + proc.stderr
    files = {Path(f["path"]).name: f for f in json.loads(proc.stdout)["files"]}
    assert files["chat_template.jinja"]["status"] == "safe"
    assert files["chat_template.json"]["status"] == "error"
    assert files["tokenizer_config.json"]["status"] == "dangerous"
    assert {f["location"] for f in files["tokenizer_config.json"]["findings"]} == {
        "chat_template[1].template"}
