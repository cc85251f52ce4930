"""The documentation is a test: every shell and Python block of README.md and docs/*.md runs.

Conventions for writing the documents (what ``tests/docs/test_docs.py`` executes):

* Fenced blocks carry a language. ``console``, ``bash`` and ``python`` blocks are executed;
  ``text`` (program output, synopses, trees) and ``json`` blocks are not. A fence without a
  language, or with any other, fails ``test_every_block_is_classified``.
* A ``console`` block is a terminal transcript. A line starting with ``$ `` is a command (a line
  ending in ``\\`` continues it, so do lines starting with ``> ``, the shell's prompt inside an
  open quote; a here-document ``<<EOF`` runs to its terminator); the lines after it, up to the
  next ``$ ``, are what the command prints (standard output and error together, as on a
  terminal). Shown output is compared line by line (trailing spaces and blank lines at either
  end ignored; a line ``...``, indented or not, stands for any number of lines). No lines shown
  means the output is not checked. A command must exit 0 unless the document shows its failure:
  a line starting with ``error:`` in its output, or ``$ echo $?`` as the next command. A command
  whose output shows ``error:`` must fail, unless it shows its own status
  (``cmd; echo "exit $?"``).
* A ``bash`` block is a script run as one command: it must exit 0; its output is not checked.
* A ``python`` block is a script, run as ``python FILE`` from the session's current folder, the
  way a reader would save and run it (so a ``multiprocessing`` example needs no test-only guard
  and gets none); it must exit 0.
* Blocks of one document run in order in ONE shell session (``tests/docs/shell.py``): ``cd``,
  ``export``, variables, ``$?`` and background jobs (``kill %1``) carry over. The session starts
  in a fresh temporary folder that is also ``$HOME``, with ``.venv/bin`` first on ``PATH`` (so
  ``weightvault`` and ``python`` are the project's), no ``WEIGHTVAULT_*`` variables,
  ``COLUMNS=100``, unbuffered Python, and ``$PORT`` set to a free TCP port on 127.0.0.1 (a
  document that starts the custody service uses it). Each command has a timeout (120 s unless
  a directive says otherwise); whatever the document left running is ended with the session.
* Directives, in an HTML comment on its own line(s) just before a block, apply to that block:
  ``<!-- docs-test: skip reason="needs the public Sigstore services" -->`` skips it (the reason is
  reported by ``test_skipped_block``); ``<!-- docs-test: timeout=300 -->`` changes its timeout.
  ``<!-- docs-test: setup NAME ... -->`` prepares files the document's examples assume (a model,
  a PKI; see ``tests/docs/fixtures.py``) in the session's current folder, at that point; a
  fixture that finds what it needs absent (the shared ``model-signing`` fixtures beside the
  checkout) skips the next block, naming the missing path.
* Hidden steps (changing a file between two commands the document shows) use Sybil's own
  ``<!-- invisible-code-block: console ... -->`` with the same transcript rules.
* What truly varies between runs is normalised in expected and actual output alike, by the
  explicit substitutions in ``tests/docs/shell.py``: the session folder is shown as ``/home/me``,
  ``$PORT`` as 8471, and fresh key ids and fingerprints, public keys, signatures, tokens, 128-bit
  random ids, SoftHSM2 slot numbers and durations become placeholders. Nothing else is loosened
  (``tests/docs/test_harness.py`` checks that digests, sizes and counts are compared as printed).
"""

# The parsers live in tests/docs/runner.py, the shell session in tests/docs/shell.py, the files
# that 'docs-test: setup' prepares in tests/docs/fixtures.py; the tests in tests/docs/test_docs.py.
