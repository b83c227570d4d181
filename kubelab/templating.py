"""The one place Jinja environments are made, and the quoting filters they carry.

Every renderer (the lab's Vagrantfile and stage scripts, verify's manifest, the
grader's reports and Gradescope scripts, the classroom's ssh wrapper) asks
`environment()` for its folder. An environment is made once per process and
folder (compiling a template is most of a render's cost). The lab's templates,
rendered by every `invoke render` and `invoke up`, are also kept compiled across
processes in Jinja's bytecode cache: kubelab/jinja in the user's cache folder
($XDG_CACHE_HOME, else $HOME/.cache), never a shared temp folder, used only while
kubelab/jinja is this user's own folder, mode 0700, in a kubelab/ of theirs that no
one else may write (Jinja unpickles what it finds there); else every process
compiles. The grader's renderers use no cache: grading writes nothing outside its
outputs.

Every value that reaches Ruby passes the `rb` filter, every value that reaches
bash passes `sh`, every value that reaches YAML passes `yaml`, every value that
reaches JSON passes `json`, every value in a line-based file passes `line`, every
value in markdown passes `md`: one quoting filter per format, defined here and
nowhere else (tests/test_render.py holds every template to it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shlex
from pathlib import Path

import jinja2

from kubelab import REPO_ROOT, user_cache

VAGRANT_TEMPLATES = REPO_ROOT / "vagrant"
PROVISION_TEMPLATES = REPO_ROOT / "provision"
MANIFEST_TEMPLATES = REPO_ROOT / "labs" / "manifests"
REPORT_TEMPLATES = REPO_ROOT / "labs" / "templates"


def ruby_string(value: object) -> str:
    """A Ruby single-quoted literal: only backslash and quote are special there."""
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    # Ruby reads CR LF in source as LF, even inside a literal: a CR goes in as a
    # double-quoted "\r" placed between single-quoted pieces ('a'"\r"'b' is one string).
    return "'" + text.replace("\r", "'\"\\r\"'") + "'"


def shell_word(value: object) -> str:
    """One bash word, whatever the value holds."""
    return shlex.quote(str(value))


def yaml_scalar(value: object) -> str:
    """A YAML scalar: JSON's double-quoted strings are valid YAML."""
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    # Escape everything outside printable ASCII; characters beyond U+FFFF as
    # \UXXXXXXXX (json.dumps would write a surrogate pair, which YAML reads as two).
    out = []
    for char in str(value):
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def one_line(value: object) -> str:
    """A value for a line-based file (a .repo, an apt list, a systemd unit, an env file,
    /etc/hosts): the text as it is, refused when it could start a line of its own."""
    text = str(value)
    if any(char in text for char in "\r\n\x00"):
        raise jinja2.TemplateRuntimeError(f"{text!r} would break its line")
    return text


def json_value(value: object) -> str:
    """A JSON value (a string quoted and escaped, a list of them, a number)."""
    return json.dumps(value)


# What markdown (and the HTML it may carry) reads as markup inside a line: code spans,
# emphasis and strikethrough, links and images, tags and entities, table cells. A
# backslash makes each plain text (CommonMark: any ASCII punctuation may be escaped).
_MARKDOWN_INLINE = frozenset("\\`*_[]<>&|~")
# ... and at the start of a line: a heading, a quote, a list item, an ordered item.
_MARKDOWN_BLOCK = re.compile(r"\s*(>|[#+=-](?=[\s#+=-]|$)|\d+[.)](?=\s|$))")


def markdown_text(value: object) -> str:
    """Text a markdown reader shows as it is, on one line: markup characters escaped,
    line breaks made spaces, no whitespace around it (so a value cannot end its
    paragraph, list item or table row, or start a block of its own: an indented
    line is a code block)."""
    text = " ".join(str(value).splitlines()).strip()
    text = "".join("\\" + char if char in _MARKDOWN_INLINE else char for char in text)
    block = _MARKDOWN_BLOCK.match(text)
    if block:  # escape the marker's punctuation: its last character
        cut = block.end() - 1
        text = text[:cut] + "\\" + text[cut:]
    return text


def cache_folder() -> Path | None:
    """kubelab's own folder of compiled templates (kubelab/jinja, mode 0700), or None:
    kubelab/user_cache.py says when."""
    return user_cache.own_folder("jinja")


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        # A cache that cannot be written (a full disk) costs the next process a
        # compile, not this render.
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


@functools.cache
def _bytecode_cache() -> jinja2.BytecodeCache | None:
    folder = cache_folder()
    return _BytecodeCache(str(folder)) if folder else None


@functools.cache
def environment(
    *folders: Path, html: bool = False, trim: bool = True, cached: bool = False
) -> jinja2.Environment:
    """The environment of templates under `folders`, made once per process.

    `html`: autoescape (the grader's HTML report; never Ruby, bash or YAML).
    `trim`: Jinja's trim_blocks and lstrip_blocks, which the lab's templates are
    written for; the older single-purpose templates render without them.
    `cached`: keep compiled templates in Jinja's bytecode cache across processes.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(f) for f in folders]),
        undefined=jinja2.StrictUndefined,
        autoescape=html,
        keep_trailing_newline=True,
        trim_blocks=trim,
        lstrip_blocks=trim,
        bytecode_cache=_bytecode_cache() if cached else None,
    )
    env.filters["rb"] = ruby_string
    env.filters["sh"] = shell_word
    env.filters["yaml"] = yaml_scalar
    env.filters["line"] = one_line
    env.filters["json"] = json_value
    env.filters["md"] = markdown_text
    return env


def lab_environment() -> jinja2.Environment:
    """The lab's templates: the Vagrantfile (vagrant/) and the stages (provision/)."""
    return environment(VAGRANT_TEMPLATES, PROVISION_TEMPLATES, cached=True)
