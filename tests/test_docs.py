"""The docs check: the links between derivations/ (the notes), minivae/ (the code) and tests/, and the notes' own
claims.

The links: every ``minivae/<mod>.py: f / g`` a note names exists in that module, every ``tests/<file>.py::test_name``
a note names exists in that file (parsed with ``ast``, never imported, each file once), every
``derivations/check_notes.py::<claim>`` a note names is a claim there and every claim is named by its note, every
``derivations/<note>.md#<anchor>`` in minivae/ resolves to a heading (GitHub's anchor rules), links between notes
resolve, their math renders on GitHub, and in the other direction every public op pair is named by a note and
links one from its docstring. Each check collects every broken link before failing.

The claims: derivations/check_notes.py holds the notes' executable maths (each note's final formulas and numbers
against an independent reference, and against minivae's code where the note says so); each claim runs here as
one test, so a failure names its claim. The code's own tests are in the module files (tests/test_<module>.py).
Derivations: derivations/README.md.
"""
import ast
import functools
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTES_DIR = ROOT / "derivations"
PKG_DIR = ROOT / "minivae"
TESTS_DIR = ROOT / "tests"
CHECK_NOTES = NOTES_DIR / "check_notes.py"

NOTES = ("README", "elbo", "linear", "activations", "reparameterization", "kl", "likelihoods", "adam", "gradcheck",
         "evaluation", "objectives", "prior", "assumptions", "flows", "made")
OP_MODULES = ("layers", "reparam", "kl", "likelihoods", "prior", "iwae", "flows", "made")
# Anchors that code, notes or the brief rely on, note by note.
REQUIRED_ANCHORS = {
    "README": {"reading-order", "notation"},
    "elbo": {"whole-model-backward"},
    "linear": {"forward", "backward"},
    "activations": {"tanh", "relu", "sigmoid", "softplus", "identity"},
    "reparameterization": {"forward", "backward"},
    "kl": {"forward", "backward"},
    "likelihoods": {"bernoulli-forward", "bernoulli-backward", "gaussian-forward", "gaussian-backward",
                    "gaussian-variance-options", "per-element-variance", "why-a-floor", "variance-floor-forward",
                    "variance-floor-backward", "discretised-targets", "categorical-forward", "categorical-backward",
                    "comparing-numbers"},
    "adam": {"update"},
    "gradcheck": {"central", "relative-error", "check", "directional", "fixed-noise"},
    "evaluation": {"elbo", "importance-weighted-bound", "log-sum-exp", "exact-log-likelihood", "active-units",
                   "elbo-surgery"},
    "objectives": {"the-beta-weighted-objective", "kl-warm-up", "the-importance-weighted-bound",
                   "importance-weighted-forward", "importance-weighted-backward", "reduction-to-the-elbo",
                   "free-bits"},
    "assumptions": {"the-table"},
    "made": {"which-assumption-it-relaxes", "masked-linear", "masks", "forward", "backward", "sampling",
             "a-decoder-that-can-ignore-z"},
    "flows": {"which-assumption-it-relaxes", "one-step-forward", "one-step-backward", "log-determinant-forward",
              "log-determinant-backward", "the-invertible-u", "the-posterior", "evaluating-a-flow"},
    "prior": {"standard-normal", "parameters", "mixture-forward", "mixture-backward", "log-q-at-a-sample",
              "sampled-kl", "sampling-the-mixture", "evaluation-with-a-mixture-prior", "vampprior",
              "which-assumption-the-vampprior-relaxes", "vampprior-backward"},
}

CODE_REF = re.compile(r"`minivae/(?P<module>[\w/]+)\.py: (?P<names>[^`]+)`")
TEST_REF = re.compile(r"tests/(?P<file>[\w/]+\.py)::(?P<name>[\w:]+)")
CLAIM_REF = re.compile(r"derivations/(?P<file>[\w/]+\.py)::(?P<name>\w+)")
NOTE_LINK = re.compile(r"derivations/(?P<note>[\w-]+\.md)(?:#(?P<anchor>[\w-]+))?")
MD_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


# ---- helpers: GitHub anchors, markdown and Python parsing -------------------------------------------------------

def github_anchor(heading):
    """GitHub's heading anchor: lowercase, drop punctuation except hyphens (and underscores, which are word
    characters), spaces -> hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _prose_lines(text):
    """(line number, line) for lines outside fenced code blocks."""
    inside = False
    for i, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield i, line


@functools.cache
def note_anchors(path):
    """All heading anchors of a note, with GitHub's -1, -2 suffixes for repeated headings."""
    seen, anchors = {}, set()
    in_math = False
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        if line.strip() == "$$":
            in_math = not in_math
            continue
        m = HEADING.match(line)
        if m and not in_math:
            base = github_anchor(m.group(2))
            k = seen.get(base, 0)
            anchors.add(base if k == 0 else f"{base}-{k}")
            seen[base] = k + 1
    return anchors


def note_path(name):
    return NOTES_DIR / (name if name.endswith(".md") else name + ".md")


def all_notes():
    return sorted(NOTES_DIR.glob("*.md"))


@functools.cache
def _parse(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@functools.cache
def module_names(path):
    """Top-level names of a module (functions, classes, assignments) and, per class, its members."""
    tree = _parse(path)
    top, members = set(), {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            top.add(node.name)
            if isinstance(node, ast.ClassDef):
                members[node.name] = {n.name for n in node.body
                                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        elif isinstance(node, ast.Assign):
            top.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return top, members


def resolves(path, dotted):
    """Whether ``dotted`` ("f" or "Class.method") is defined in the module at ``path``."""
    top, members = module_names(path)
    head, _, rest = dotted.partition(".")
    if not rest:
        return head in top
    return head in members and rest in members[head]


@functools.cache
def _test_ids(path):
    """The test ids a pytest file defines: "test_f" and "TestC::test_m"."""
    tree = _parse(path)
    ids = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            ids.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            ids.update(f"{node.name}::{n.name}" for n in node.body
                       if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test"))
    return ids


def code_refs(text):
    """(line, module, name) for every function a note names as `minivae/<module>.py: f / g`."""
    for lineno, line in _prose_lines(text):
        for m in CODE_REF.finditer(line):
            for name in re.split(r"\s*[/,]\s*", m.group("names").strip()):
                yield lineno, m.group("module"), name


def op_functions():
    """(module, function node) for every public *_forward / *_backward in the op modules."""
    for mod in OP_MODULES:
        for node in _parse(PKG_DIR / f"{mod}.py").body:
            if (isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
                    and node.name.endswith(("_forward", "_backward"))):
                yield mod, node


def _load_check_notes():
    """derivations/check_notes.py as a module (it is not a package): its CLAIMS, run and main."""
    spec = importlib.util.spec_from_file_location("check_notes", CHECK_NOTES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_notes = _load_check_notes()


def claim_refs(text):
    """(line, file, name) for every derivations/<file>.py::<claim> in the prose of ``text``."""
    for lineno, line in _prose_lines(text):
        for m in CLAIM_REF.finditer(line):
            yield lineno, m.group("file"), m.group("name")


def _fail(problems, what):
    if problems:
        pytest.fail(f"{len(problems)} {what}:\n  " + "\n  ".join(problems), pytrace=False)


# ---- Part 1: links -----------------------------------------------------------------------------------------

def test_github_anchor_rules():
    assert github_anchor("Whole-model backward") == "whole-model-backward"
    assert github_anchor("Bernoulli forward") == "bernoulli-forward"
    assert github_anchor("KL(q(z|x) || p(z)) in closed form") == "klqzx--pz-in-closed-form"
    assert github_anchor("Map: note, code, tests") == "map-note-code-tests"
    assert github_anchor("`rel_error` and h") == "rel_error-and-h"


def test_every_note_exists_with_its_required_anchors():
    problems = []
    for name in NOTES:
        path = note_path(name)
        if not path.is_file():
            problems.append(f"derivations/{name}.md is missing")
            continue
        missing = REQUIRED_ANCHORS.get(name, set()) - note_anchors(path)
        problems += [f"derivations/{name}.md has no heading with anchor #{a}" for a in sorted(missing)]
    _fail(problems, "missing notes or anchors")


def test_functions_named_by_notes_exist():
    problems = []
    for path in all_notes():
        for lineno, module, name in code_refs(path.read_text(encoding="utf-8")):
            where = f"derivations/{path.name}:{lineno}"
            mod_path = PKG_DIR / f"{module}.py"
            if not mod_path.is_file():
                problems.append(f"{where}: minivae/{module}.py does not exist")
            elif not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?", name):
                problems.append(f"{where}: {name!r} is not a function name (minivae/{module}.py)")
            elif not resolves(mod_path, name):
                problems.append(f"{where}: minivae/{module}.py has no {name}")
    _fail(problems, "functions named by notes that do not exist")


def test_tests_named_by_notes_exist():
    problems = []
    for path in all_notes():
        for lineno, line in _prose_lines(path.read_text(encoding="utf-8")):
            for m in TEST_REF.finditer(line):
                where = f"derivations/{path.name}:{lineno}"
                test_path = TESTS_DIR / m.group("file")
                if not test_path.is_file():
                    problems.append(f"{where}: tests/{m.group('file')} does not exist")
                elif m.group("name") not in _test_ids(test_path):
                    problems.append(f"{where}: tests/{m.group('file')} has no test {m.group('name')}")
    _fail(problems, "tests named by notes that do not exist")


def test_claims_named_by_notes_exist():
    """Every derivations/<file>.py::<claim> in the notes and the top README is a claim of check_notes.py."""
    problems = []
    for path in all_notes() + [ROOT / "README.md"]:
        for lineno, file, name in claim_refs(path.read_text(encoding="utf-8")):
            where = f"{path.relative_to(ROOT)}:{lineno}"
            if file != CHECK_NOTES.name:
                problems.append(f"{where}: derivations/{file} is not {CHECK_NOTES.relative_to(ROOT)}")
            elif name not in check_notes.CLAIMS:
                problems.append(f"{where}: derivations/{file} has no claim {name}")
    _fail(problems, "claims named by notes that do not exist")


def test_every_claim_is_named_by_its_note():
    """The other direction: each claim of check_notes.py belongs to a note, and that note names it."""
    problems = []
    for name, (note, _) in check_notes.CLAIMS.items():
        path = note_path(note)
        if note not in NOTES or not path.is_file():
            problems.append(f"claim {name}: its note derivations/{note}.md does not exist")
        elif name not in {n for _, _, n in claim_refs(path.read_text(encoding="utf-8"))}:
            problems.append(f"claim {name}: derivations/{note}.md does not name derivations/check_notes.py::{name}")
    _fail(problems, "claims their notes do not name")


def test_links_from_code_to_notes_resolve():
    """Every derivations/<note>.md[#anchor] in minivae/**/*.py, parts/ included (docstrings and comments), and the
    top README."""
    problems = []
    sources = sorted(PKG_DIR.rglob("*.py")) + [p for p in (ROOT / "README.md",) if p.is_file()]
    for src in sources:
        for lineno, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
            for m in NOTE_LINK.finditer(line):
                where = f"{src.relative_to(ROOT)}:{lineno}"
                target = NOTES_DIR / m.group("note")
                if not target.is_file():
                    problems.append(f"{where}: derivations/{m.group('note')} does not exist")
                elif m.group("anchor") and m.group("anchor") not in note_anchors(target):
                    problems.append(f"{where}: derivations/{m.group('note')} has no heading "
                                    f"#{m.group('anchor')} (it has: {', '.join(sorted(note_anchors(target)))})")
    _fail(problems, "broken links from code to derivations/")


def test_links_between_notes_resolve():
    """Relative markdown links inside the notes: [text](other.md#anchor), [text](#anchor)."""
    problems = []
    for path in all_notes():
        for lineno, line in _prose_lines(path.read_text(encoding="utf-8")):
            for m in MD_LINK.finditer(line):
                target = m.group("target")
                if re.match(r"[a-z]+://", target):
                    continue
                file_part, _, anchor = target.partition("#")
                dest = path if not file_part else (path.parent / file_part).resolve()
                where = f"derivations/{path.name}:{lineno}"
                if not dest.exists():
                    problems.append(f"{where}: link target {target} does not exist")
                elif anchor and dest.suffix == ".md" and anchor not in note_anchors(dest):
                    problems.append(f"{where}: {dest.name} has no heading #{anchor}")
    _fail(problems, "broken links between notes")


def test_every_op_pair_is_named_by_a_note_and_links_its_section():
    named = {}
    for path in all_notes():
        for _, module, name in code_refs(path.read_text(encoding="utf-8")):
            named.setdefault((module, name), set()).add(path.name)
    problems = []
    for mod, node in op_functions():
        where = f"minivae/{mod}.py: {node.name}"
        notes = named.get((mod, node.name), set())
        if not notes:
            problems.append(f"{where} is named by no note in derivations/")
        doc = ast.get_docstring(node) or ""
        links = [m for m in NOTE_LINK.finditer(doc) if m.group("anchor")]
        if not links:
            problems.append(f"{where}: its docstring links no derivations/<note>.md#<section>")
        for m in links:
            if notes and m.group("note") not in notes:
                problems.append(f"{where}: its docstring links derivations/{m.group('note')}, but that note does "
                                f"not name it (named by: {', '.join(sorted(notes))})")
    pair_names = {(mod, node.name) for mod, node in op_functions()}
    for mod, name in sorted(pair_names):
        for a, b in (("_forward", "_backward"), ("_backward", "_forward")):
            if name.endswith(a) and (mod, name[: -len(a)] + b) not in pair_names:
                problems.append(f"minivae/{mod}.py: {name} has no matching {name[: -len(a)] + b}")
    _fail(problems, "op functions without a derivation link")


def test_every_note_names_code_and_tests():
    problems = []
    for path in all_notes():
        text = path.read_text(encoding="utf-8")
        if not list(code_refs(text)):
            problems.append(f"derivations/{path.name} names no `minivae/<module>.py: function`")
        if not TEST_REF.search(text):
            problems.append(f"derivations/{path.name} names no tests/<file>.py::<test>")
    _fail(problems, "notes without code or tests")


def test_math_delimiters_balance_for_github():
    """$$ blocks pair up; inline $ pairs up on each line; no raw '<' inside math (GitHub reads it as HTML)."""
    problems = []
    for path in all_notes():
        in_block = False
        for lineno, line in _prose_lines(path.read_text(encoding="utf-8")):
            where = f"derivations/{path.name}:{lineno}"
            if line.strip() == "$$":
                in_block = not in_block
                continue
            if in_block:
                if "<" in line:
                    problems.append(f"{where}: raw '<' in display math (use \\lt or \\le)")
                continue
            prose = re.sub(r"`[^`]*`", "", line)
            if "$$" in prose:
                problems.append(f"{where}: put $$ on a line of its own")
                continue
            if prose.count("$") % 2:
                problems.append(f"{where}: odd number of inline $ delimiters")
            for math_span in re.findall(r"\$([^$]*)\$", prose):
                if "<" in math_span:
                    problems.append(f"{where}: raw '<' in inline math (use \\lt or \\le)")
                if math_span != math_span.strip():
                    problems.append(f"{where}: inline math ${math_span}$ starts or ends with a space")
        if in_block:
            problems.append(f"derivations/{path.name}: unclosed $$ block")
    _fail(problems, "math-rendering problems")


# ---- the notes' claims (derivations/check_notes.py) -------------------------------------------------------------

@pytest.mark.parametrize("name", list(check_notes.CLAIMS))
def test_note_claim_holds(name):
    """One claim of a note; its docstring says what it checks (run alone: python derivations/check_notes.py)."""
    check_notes.CLAIMS[name][1]()


def test_check_notes_prints_a_line_per_claim_and_fails_on_a_false_one(capsys, monkeypatch):
    """main() prints one line per claim run (filtered by note) and exits 0; a false claim makes it print FAIL
    with its name and reason and exit 1; an unknown note name exits 2."""
    linear = [n for n, (note, _) in check_notes.CLAIMS.items() if note == "linear"]
    assert check_notes.main(["linear"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"ok    linear.md  {n}" for n in linear]

    def two_is_three():
        raise AssertionError("two is not three")  # a plain raise: pytest rewrites this file's asserts

    monkeypatch.setitem(check_notes.CLAIMS, "two_is_three", ("linear", two_is_three))
    assert check_notes.main(["linear"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(linear) + 1
    assert lines[-1].startswith("FAIL  linear.md  two_is_three  AssertionError at line ")
    assert lines[-1].endswith("two is not three")
    assert check_notes.main(["no-such-note"]) == 2


def test_check_notes_runs_on_its_own():
    """python derivations/check_notes.py <note> from anywhere: this checkout's minivae, one line per claim."""
    out = subprocess.run([sys.executable, str(CHECK_NOTES), "linear"], capture_output=True, text=True, cwd="/",
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["ok    linear.md  linear_backward_matches_index_form"]
