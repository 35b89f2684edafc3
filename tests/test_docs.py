"""Checks for derivations/: the links between notes, code and tests, and each note's final formulas.

Part 1 keeps the three-way links honest: every ``minivae/<mod>.py: f / g`` a note names exists in that module,
every ``tests/<file>.py::test_name`` a note names exists in that file (parsed with ``ast``, never imported),
every ``derivations/<note>.md#<anchor>`` in minivae/ resolves to a heading (GitHub's anchor rules), and in the
other direction every public op pair is named by a note and links one from its docstring. Each check collects
every broken link before failing.

Part 2 evaluates each note's final formulas against an independent reference (scipy, numpy.linalg, complex-step
derivatives, Monte Carlo with a fixed seed, numerical integration), and against the ops where useful.
Derivations: derivations/README.md.
"""
import ast
import functools
import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, special, stats

from minivae import gradcheck
from minivae.gradcheck import check_backward, directional_check, numerical_gradient, rel_error
from minivae.kl import kl_std_normal_backward, kl_std_normal_forward
from minivae.layers import (identity_backward, identity_forward, linear_backward, linear_forward, relu_backward,
                            relu_forward, sigmoid_backward, sigmoid_forward, softplus_backward, softplus_forward,
                            tanh_backward, tanh_forward)
from minivae.likelihoods import (SIGMA_MIN, bernoulli_nll_backward, bernoulli_nll_forward, gaussian_nll_backward,
                                 gaussian_nll_forward)
from minivae.model import VAE
from minivae.objectives import ELBO, IWBound
from minivae.optim import SGD, Adam
from minivae.reparam import (LOGVAR_MAX, logvar_clamp_backward, logvar_clamp_forward, reparameterize_backward,
                             reparameterize_forward)

ROOT = Path(__file__).resolve().parents[1]
NOTES_DIR = ROOT / "derivations"
PKG_DIR = ROOT / "minivae"
TESTS_DIR = ROOT / "tests"

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


# ---- Part 2: the formulas ----------------------------------------------------------------------------------

H_CS = 1e-30        # complex step: f'(x) = Im f(x + i h) / h, exact to rounding (no subtraction, no cancellation)


def complex_step_grad(fun, arr):
    """Gradient of the real scalar fun(arr) by the complex step, one element at a time (fun must be analytic)."""
    base = np.asarray(arr, dtype=np.complex128)
    grad = np.empty(base.shape)
    for idx in np.ndindex(*base.shape):
        a = base.copy()
        a[idx] += 1j * H_CS
        grad[idx] = np.imag(fun(a)) / H_CS
    return grad


def within_standard_errors(samples, expected, k=4.0):
    """The Monte Carlo mean of samples is within k standard errors of expected (fixed seeds make it exact)."""
    samples = np.asarray(samples)
    se = np.std(samples, ddof=1) / math.sqrt(samples.size)
    return abs(np.mean(samples) - expected) <= k * se, (np.mean(samples), expected, se)


# linear.md

def test_linear_backward_matches_index_form():
    rng = np.random.default_rng(0)
    N, D_in, D_out = 3, 4, 5
    x, W, b = rng.standard_normal((N, D_in)), rng.standard_normal((D_in, D_out)), rng.standard_normal(D_out)
    dy = rng.standard_normal((N, D_out))
    # index form, loops as written in the note
    dx = np.array([[sum(dy[n, k] * W[i, k] for k in range(D_out)) for i in range(D_in)] for n in range(N)])
    dW = np.array([[sum(x[m, i] * dy[m, j] for m in range(N)) for j in range(D_out)] for i in range(D_in)])
    db = np.array([sum(dy[m, j] for m in range(N)) for j in range(D_out)])
    # independent reference: complex-step derivatives of sum(dy * (x W + b))
    def s(x_, W_, b_):
        return np.sum(dy * (x_ @ W_ + b_))
    np.testing.assert_allclose(dx, complex_step_grad(lambda a: s(a, W, b), x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dW, complex_step_grad(lambda a: s(x, a, b), W), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(db, complex_step_grad(lambda a: s(x, W, a), b), rtol=1e-12, atol=1e-14)
    # the matrix form and the op
    np.testing.assert_allclose(dy @ W.T, dx, rtol=1e-12)
    np.testing.assert_allclose(x.T @ dy, dW, rtol=1e-12)
    _, cache = linear_forward(x, W, b)
    for got, want in zip(linear_backward(dy, cache), (dx, dW, db), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


# activations.md

ANALYTIC = {  # complex-capable forward formulas, independent of the ops
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "identity": lambda x: x,
}
FROM_OUTPUT = {  # each note's derivative written in terms of the cached output y
    "tanh": lambda y: 1.0 - y * y,
    "sigmoid": lambda y: y * (1.0 - y),
    "softplus": lambda y: -np.expm1(-y),
    "identity": lambda y: np.ones_like(y),
    "relu": lambda y: (y > 0.0).astype(np.float64),
}
OPS = {"tanh": (tanh_forward, tanh_backward), "sigmoid": (sigmoid_forward, sigmoid_backward),
       "softplus": (softplus_forward, softplus_backward), "identity": (identity_forward, identity_backward),
       "relu": (relu_forward, relu_backward)}


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus", "identity", "relu"])
def test_activation_derivatives_from_cached_output(name):
    rng = np.random.default_rng(1)
    x = rng.uniform(-3.0, 3.0, size=(4, 6))
    x[np.abs(x) < 0.1] = 0.5                      # relu: keep away from the kink
    dy = rng.standard_normal(x.shape)
    if name == "relu":
        y, reference = np.maximum(x, 0.0), np.heaviside(x, 0.0)   # one-sided derivatives agree off 0
    else:
        y = ANALYTIC[name](x)
        reference = complex_step_grad(lambda a: np.sum(dy * ANALYTIC[name](a)), x) / dy
    np.testing.assert_allclose(FROM_OUTPUT[name](y), reference, rtol=1e-12, atol=1e-15)
    forward, backward = OPS[name]
    y_op, cache = forward(x)
    np.testing.assert_allclose(y_op, y, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(backward(dy, cache), dy * FROM_OUTPUT[name](y), rtol=1e-12, atol=1e-15)


def test_softplus_derivative_identity():
    x = np.linspace(-40.0, 40.0, 801)
    y = np.logaddexp(0.0, x)                       # softplus, independent of minivae
    np.testing.assert_allclose(-np.expm1(-y), special.expit(x), rtol=1e-12, atol=0)
    y_op, cache = softplus_forward(x)
    np.testing.assert_allclose(y_op, y, rtol=1e-14, atol=0)
    np.testing.assert_allclose(softplus_backward(np.ones_like(x), cache), special.expit(x), rtol=1e-12, atol=0)
    # the cancellation expm1 avoids: at x = -40, 1 - exp(-y) is exactly 0 while sigmoid(-40) ~ 4.2e-18
    y40 = np.logaddexp(0.0, -40.0)
    assert 1.0 - np.exp(-y40) == 0.0
    assert -np.expm1(-y40) == pytest.approx(special.expit(-40.0), rel=1e-12)
    # the stable forward form equals log(1 + e^x)
    np.testing.assert_allclose(np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x))), y, rtol=1e-14)


def test_stable_forms_do_not_overflow():
    x = np.array([-1000.0, -800.0, -50.0, -1.0, 0.0, 1.0, 50.0, 800.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        e = np.exp(-np.abs(x))
        for branch in (1.0 / (1.0 + e), e / (1.0 + e)):        # both branches are finite everywhere
            assert np.all(np.isfinite(branch))
        y_sig, _ = sigmoid_forward(x)
        y_sp, _ = softplus_forward(x)
        with pytest.raises(FloatingPointError):
            1.0 / (1.0 + np.exp(-x))                               # the naive sigmoid overflows at -1000
        with pytest.raises(FloatingPointError):
            np.log(1.0 + np.exp(x))                                # the naive softplus overflows at 1000
    np.testing.assert_allclose(y_sig, special.expit(x), rtol=1e-15, atol=0)
    np.testing.assert_allclose(y_sp, np.logaddexp(0.0, x), rtol=1e-15, atol=0)


# reparameterization.md

def test_reparam_partial_derivatives():
    rng = np.random.default_rng(2)
    mu, logvar, eps, dz = (rng.standard_normal((3, 4)) for _ in range(4))
    def z(m, lv):
        return m + np.exp(lv / 2.0) * eps                    # reparameterization.md#forward
    dmu_ref = complex_step_grad(lambda a: np.sum(dz * z(a, logvar)), mu)
    dlv_ref = complex_step_grad(lambda a: np.sum(dz * z(mu, a)), logvar)
    sigma = np.exp(logvar / 2.0)
    np.testing.assert_allclose(dz, dmu_ref, rtol=1e-12)
    np.testing.assert_allclose(0.5 * dz * eps * sigma, dlv_ref, rtol=1e-12)
    np.testing.assert_allclose(0.5 * dz * (mu + sigma * eps - mu), dlv_ref, rtol=1e-10, atol=1e-14)
    _, cache = reparameterize_forward(mu, logvar, eps)
    dmu, dlv = reparameterize_backward(dz, cache)
    np.testing.assert_allclose(dmu, dmu_ref, rtol=1e-12)
    np.testing.assert_allclose(dlv, dlv_ref, rtol=1e-12)


def test_pathwise_gradient_is_unbiased():
    """E_q[z^2] = mu^2 + sigma^2, so its gradient is (2 mu, sigma^2) in (mu, logvar); the single-sample
    pathwise gradients (the reparam backward with dz = f'(z) = 2z) must average to it."""
    M = 200_000
    rng = np.random.default_rng(3)
    mu_val, logvar_val = 0.7, math.log(1.5 ** 2)
    mu, logvar = np.full((M, 1), mu_val), np.full((M, 1), logvar_val)
    eps = rng.standard_normal((M, 1))
    z, cache = reparameterize_forward(mu, logvar, eps)
    dmu, dlogvar = reparameterize_backward(2.0 * z, cache)
    ok, info = within_standard_errors(dmu, 2.0 * mu_val)
    assert ok, info
    ok, info = within_standard_errors(dlogvar, math.exp(logvar_val))
    assert ok, info
    ok, info = within_standard_errors(z, mu_val)                              # z ~ N(mu, sigma^2)
    assert ok, info
    ok, info = within_standard_errors((z - mu_val) ** 2, math.exp(logvar_val))
    assert ok, info


@pytest.mark.parametrize("c", [0.0, 1.0, 5.0])
def test_score_function_variance_claims(c):
    """q = N(0, 1), f(z) = z^2 + c, gradient in mu at mu = 0: score estimator (z^2 + c) z has mean 0 and
    variance 15 + 6c + c^2; pathwise estimator 2z has mean 0 and variance 4 (reparameterization.md)."""
    phi = stats.norm.pdf
    def moment(g):
        return integrate.quad(lambda t: g(t) * phi(t), -np.inf, np.inf, epsabs=1e-13, epsrel=1e-13)[0]
    def score(t):
        return (t * t + c) * t
    assert abs(moment(score)) < 1e-10
    assert moment(lambda t: score(t) ** 2) == pytest.approx(15.0 + 6.0 * c + c * c, rel=1e-10)
    assert moment(lambda t: (2.0 * t) ** 2) == pytest.approx(4.0, rel=1e-10)


def test_logvar_clamp_pair_is_min_with_a_flat_gradient():
    """reparameterization.md#the-clamp: forward min(r, 40); backward passes dlogvar unchanged where r <= 40 (at 40
    itself, the left derivative) and 0 beyond, the complex-step derivative of min written as a where; a NaN r is
    not masked; and in float32 nothing beyond the bound can overflow exp(logvar) any more."""
    rng = np.random.default_rng(30)
    r = np.concatenate([rng.uniform(-50.0, LOGVAR_MAX - 0.1, 6), [LOGVAR_MAX], rng.uniform(LOGVAR_MAX + 0.1, 100.0, 6)])
    dout = rng.standard_normal(r.shape)
    logvar, cache = logvar_clamp_forward(r)
    np.testing.assert_array_equal(logvar, np.minimum(r, LOGVAR_MAX))
    dr = logvar_clamp_backward(dout, cache)
    reference = complex_step_grad(lambda a: np.sum(dout * np.where(np.real(a) > LOGVAR_MAX, LOGVAR_MAX, a)), r)
    np.testing.assert_allclose(dr, reference, rtol=1e-12, atol=0)
    inside = r <= LOGVAR_MAX
    assert np.all(dr[inside] == dout[inside]) and np.all(dr[~inside] == 0.0)       # passed bit for bit, or stopped
    nan_logvar, nan_cache = logvar_clamp_forward(np.array([np.nan]))
    assert np.isnan(nan_logvar[0]) and logvar_clamp_backward(np.array([2.0]), nan_cache)[0] == 2.0
    with np.errstate(over="raise"):
        lv32, _ = logvar_clamp_forward(np.array([100.0, 1e30], dtype=np.float32))
        assert lv32.dtype == np.float32 and np.all(np.isfinite(np.exp(lv32)))


# kl.md

def kl_two_gaussians(mu0, S0, mu1, S1):
    """kl.md, Step 3: 1/2 [tr(S1^-1 S0) + (mu1-mu0)^T S1^-1 (mu1-mu0) - k + log det S1 - log det S0]."""
    k = mu0.shape[0]
    d = mu1 - mu0
    _, logdet1 = np.linalg.slogdet(S1)
    _, logdet0 = np.linalg.slogdet(S0)
    return 0.5 * (np.trace(np.linalg.solve(S1, S0)) + d @ np.linalg.solve(S1, d) - k + logdet1 - logdet0)


def kl_closed_form(mu, logvar):
    """kl.md, Step 6 (complex-capable)."""
    return 0.5 * np.sum(np.exp(logvar) + mu * mu - 1.0 - logvar, axis=-1)


def _spd(rng, k):
    A = rng.standard_normal((k, k))
    return A @ A.T + 0.5 * np.eye(k)


def test_kl_general_formula_matches_monte_carlo():
    rng = np.random.default_rng(4)
    k, M = 3, 200_000
    mu0, mu1 = rng.standard_normal(k), rng.standard_normal(k)
    S0, S1 = _spd(rng, k), _spd(rng, k)
    z = rng.multivariate_normal(mu0, S0, size=M)
    log_ratio = stats.multivariate_normal.logpdf(z, mu0, S0) - stats.multivariate_normal.logpdf(z, mu1, S1)
    ok, info = within_standard_errors(log_ratio, kl_two_gaussians(mu0, S0, mu1, S1))
    assert ok, info


def test_kl_closed_form_matches_general_formula():
    rng = np.random.default_rng(5)
    N, Z = 6, 4
    mu, logvar = rng.standard_normal((N, Z)), rng.uniform(-2.0, 2.0, (N, Z))
    general = np.array([kl_two_gaussians(mu[n], np.diag(np.exp(logvar[n])), np.zeros(Z), np.eye(Z))
                        for n in range(N)])
    np.testing.assert_allclose(kl_closed_form(mu, logvar), general, rtol=1e-12)
    sigma2 = np.exp(logvar)       # the sigma form of Step 5
    np.testing.assert_allclose(0.5 * np.sum(sigma2 + mu ** 2 - 1.0 - np.log(sigma2), axis=1), general, rtol=1e-12)
    kl, _ = kl_std_normal_forward(mu, logvar)
    np.testing.assert_allclose(kl, general, rtol=1e-12)
    assert kl_closed_form(np.zeros(Z), np.zeros(Z)) == 0.0


def test_kl_closed_form_matches_monte_carlo():
    rng = np.random.default_rng(6)
    Z, M = 3, 200_000
    mu, logvar = np.array([0.5, -1.0, 0.2]), np.array([-0.5, 0.3, 1.0])
    sigma = np.exp(logvar / 2.0)
    z = mu + sigma * rng.standard_normal((M, Z))
    log_ratio = np.sum(stats.norm.logpdf(z, mu, sigma) - stats.norm.logpdf(z), axis=1)
    ok, info = within_standard_errors(log_ratio, kl_closed_form(mu, logvar))
    assert ok, info


def test_kl_gradients_match_complex_step():
    rng = np.random.default_rng(7)
    mu, logvar, dkl = rng.standard_normal((3, 4)), rng.uniform(-2, 2, (3, 4)), rng.standard_normal(3)
    dmu_ref = complex_step_grad(lambda a: np.sum(dkl * kl_closed_form(a, logvar)), mu)
    dlv_ref = complex_step_grad(lambda a: np.sum(dkl * kl_closed_form(mu, a)), logvar)
    np.testing.assert_allclose(dkl[:, None] * mu, dmu_ref, rtol=1e-12)
    np.testing.assert_allclose(dkl[:, None] * (np.exp(logvar) - 1.0) / 2.0, dlv_ref, rtol=1e-12)
    _, cache = kl_std_normal_forward(mu, logvar)
    dmu, dlv = kl_std_normal_backward(dkl, cache)
    np.testing.assert_allclose(dmu, dmu_ref, rtol=1e-12)
    np.testing.assert_allclose(dlv, dlv_ref, rtol=1e-12)


# likelihoods.md

LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_reference_ll(x, a):
    """x log sigmoid(a) + (1 - x) log(1 - sigmoid(a)), per element, with scipy; log(1 - sigmoid(a)) = log_expit(-a)."""
    return x * special.log_expit(a) + (1.0 - x) * special.log_expit(-a)


def test_bernoulli_nll_formula_matches_log_expit():
    rng = np.random.default_rng(8)
    a = rng.uniform(-5.0, 5.0, (5, 7))
    for x in (rng.integers(0, 2, a.shape).astype(np.float64), rng.uniform(0.0, 1.0, a.shape)):
        formula = np.sum(np.logaddexp(0.0, a) - x * a, axis=1)
        stable = np.sum(np.maximum(a, 0.0) + np.log1p(np.exp(-np.abs(a))) - x * a, axis=1)
        reference = -np.sum(bernoulli_reference_ll(x, a), axis=1)
        np.testing.assert_allclose(formula, reference, rtol=1e-12)
        np.testing.assert_allclose(stable, reference, rtol=1e-12)
        nll, _ = bernoulli_nll_forward(x, a)
        np.testing.assert_allclose(nll, reference, rtol=1e-12)


def test_bernoulli_stable_where_log_sigmoid_fails():
    x = np.array([[1.0, 0.0]])
    a = np.array([[-800.0, 40.0]])
    with np.errstate(divide="ignore", under="ignore", over="ignore"):
        naive = -(x * np.log(special.expit(a)) + (1.0 - x) * np.log(1.0 - special.expit(a)))
    assert np.all(np.isinf(naive))                                  # log(0) twice
    reference = -bernoulli_reference_ll(x, a)                        # 800 and 40 (to rounding)
    np.testing.assert_allclose(reference, [[800.0, 40.0]], rtol=1e-15)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        stable = np.maximum(a, 0.0) + np.log1p(np.exp(-np.abs(a))) - x * a
        nll, cache = bernoulli_nll_forward(x, a)
        da = bernoulli_nll_backward(np.ones(1), cache)
    np.testing.assert_allclose(stable, reference, rtol=1e-15)
    np.testing.assert_allclose(nll, reference.sum(axis=1), rtol=1e-15)
    np.testing.assert_allclose(da, special.expit(a) - x, rtol=1e-15, atol=0)   # finite, in [-1, 1]


def gaussian_nll_formula(x, mean, logvar):
    """likelihoods.md, Gaussian forward (complex-capable)."""
    return 0.5 * np.sum(LOG_2PI + logvar + (x - mean) ** 2 * np.exp(-logvar), axis=-1)


LOGVAR_SHAPES = [(5, 3), (3,), (1, 3), ()]


@pytest.mark.parametrize("shape", LOGVAR_SHAPES)
def test_gaussian_nll_formula_matches_norm_logpdf(shape):
    rng = np.random.default_rng(9)
    x, mean = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    logvar = rng.uniform(-1.5, 1.5, shape)
    reference = -np.sum(stats.norm.logpdf(x, loc=mean, scale=np.exp(logvar / 2.0)), axis=1)
    np.testing.assert_allclose(gaussian_nll_formula(x, mean, logvar), reference, rtol=1e-12)
    nll, _ = gaussian_nll_forward(x, mean, logvar)
    np.testing.assert_allclose(nll, reference, rtol=1e-12)


def test_gaussian_fixed_variance_reduces_to_squared_error():
    rng = np.random.default_rng(10)
    N, D, c = 4, 6, math.log(0.3)
    x, mean = rng.standard_normal((N, D)), rng.standard_normal((N, D))
    sigma2 = math.exp(c)
    reduced = np.sum((x - mean) ** 2, axis=1) / (2.0 * sigma2) + D / 2.0 * (LOG_2PI + c)
    reference = -np.sum(stats.norm.logpdf(x, loc=mean, scale=math.sqrt(sigma2)), axis=1)
    np.testing.assert_allclose(reduced, reference, rtol=1e-12)


@pytest.mark.parametrize("shape", LOGVAR_SHAPES)
def test_likelihood_gradients_match_complex_step(shape):
    rng = np.random.default_rng(11)
    N, D = 5, 3
    dnll = rng.standard_normal(N)
    # Bernoulli: d/da of -[x log sigmoid(a) + (1 - x) log(1 - sigmoid(a))], written out so it is analytic
    x01, a = rng.uniform(0.0, 1.0, (N, D)), rng.uniform(-4.0, 4.0, (N, D))
    def sig(t):
        return 1.0 / (1.0 + np.exp(-t))
    def ref_nll(t):
        return -np.sum(x01 * np.log(sig(t)) + (1.0 - x01) * np.log(1.0 - sig(t)), axis=1)
    da_ref = complex_step_grad(lambda t: np.sum(dnll * ref_nll(t)), a)
    np.testing.assert_allclose(dnll[:, None] * (special.expit(a) - x01), da_ref, rtol=1e-11)
    _, cache = bernoulli_nll_forward(x01, a)
    np.testing.assert_allclose(bernoulli_nll_backward(dnll, cache), da_ref, rtol=1e-11)
    # Gaussian: dmean, and dlogvar summed over the axes that broadcasting added or stretched
    x, mean = rng.standard_normal((N, D)), rng.standard_normal((N, D))
    logvar = rng.uniform(-1.0, 1.0, shape)
    dm_ref = complex_step_grad(lambda t: np.sum(dnll * gaussian_nll_formula(x, t, logvar)), mean)
    dlv_ref = complex_step_grad(lambda t: np.sum(dnll * gaussian_nll_formula(x, mean, t)), logvar)
    var = np.exp(logvar)
    np.testing.assert_allclose(-dnll[:, None] * (x - mean) / var, dm_ref, rtol=1e-12)
    g = 0.5 * dnll[:, None] * (1.0 - (x - mean) ** 2 / var)            # (N, D): one entry per use
    reduced = {(N, D): g, (D,): np.sum(g, axis=0), (1, D): np.sum(g, axis=0, keepdims=True), (): np.sum(g)}[shape]
    np.testing.assert_allclose(reduced, dlv_ref, rtol=1e-12)
    _, cache = gaussian_nll_forward(x, mean, logvar)
    dm, dlv = gaussian_nll_backward(dnll, cache)
    np.testing.assert_allclose(dm, dm_ref, rtol=1e-12)
    assert np.shape(dlv) == shape
    np.testing.assert_allclose(dlv, dlv_ref, rtol=1e-12)


# elbo.md

def _linear_gaussian(seed=12, Z=2, D=3):
    """p(z) = N(0, I), p(x|z) = N(z A + c, s2 I): every term of the decomposition has a closed form."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((Z, D)), rng.standard_normal(D), 0.6, rng.standard_normal(D)


def _expected_loglik(x, A, c, s2, m, S):
    """E_{z ~ N(m, S)} log N(x; z A + c, s2 I) = -D/2 log(2 pi s2) - (|x - m A - c|^2 + tr(A^T S A)) / (2 s2)."""
    D = x.shape[0]
    r = x - m @ A - c
    return -0.5 * D * math.log(2.0 * math.pi * s2) - (r @ r + np.trace(A.T @ S @ A)) / (2.0 * s2)


def test_elbo_decomposition_linear_gaussian():
    A, c, s2, x = _linear_gaussian()
    Z, D = A.shape
    log_px = stats.multivariate_normal.logpdf(x, c, A.T @ A + s2 * np.eye(D))
    P = np.eye(Z) + A @ A.T / s2                                      # posterior precision
    S_post = np.linalg.inv(P)
    m_post = np.linalg.solve(P, A @ (x - c)) / s2
    rng = np.random.default_rng(13)
    for _ in range(5):                                                # arbitrary diagonal q = N(m, diag v)
        m, v = rng.standard_normal(Z), np.exp(rng.uniform(-1.0, 1.0, Z))
        elbo = _expected_loglik(x, A, c, s2, m, np.diag(v)) - kl_closed_form(m, np.log(v))
        gap = kl_two_gaussians(m, np.diag(v), m_post, S_post)
        np.testing.assert_allclose(elbo + gap, log_px, rtol=1e-12)    # log p(x) = ELBO + KL(q || posterior)
        assert elbo < log_px and gap > 0.0                            # ELBO <= log p(x)
    # q = the true posterior (full covariance): the gap is 0 and the bound is tight
    elbo_post = (_expected_loglik(x, A, c, s2, m_post, S_post)
                 - kl_two_gaussians(m_post, S_post, np.zeros(Z), np.eye(Z)))
    np.testing.assert_allclose(elbo_post, log_px, rtol=1e-12)


def test_single_sample_elbo_estimate_is_unbiased():
    """-(nll + kl) at one eps per example, from the ops, averages to the closed-form ELBO."""
    A, c, s2, x = _linear_gaussian()
    Z, D = A.shape
    m, logvar = np.array([0.3, -0.4]), np.array([-0.7, 0.2])
    elbo = _expected_loglik(x, A, c, s2, m, np.diag(np.exp(logvar))) - kl_closed_form(m, logvar)
    M = 200_000
    rng = np.random.default_rng(14)
    mu, lv = np.tile(m, (M, 1)), np.tile(logvar, (M, 1))
    z, _ = reparameterize_forward(mu, lv, rng.standard_normal((M, Z)))
    nll, _ = gaussian_nll_forward(np.tile(x, (M, 1)), z @ A + c, np.array(math.log(s2)))
    kl, _ = kl_std_normal_forward(mu, lv)
    ok, info = within_standard_errors(-(nll + kl), elbo)
    assert ok, info


def _logsumexp(a, axis):
    """log sum exp over ``axis``, complex-capable: shifted by the maximum of the real part, a constant, so the
    complex step still sees the exact derivative."""
    m = np.max(np.real(a), axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _reference_vae_loss(p, x, eps, beta, likelihood, activation, n_hidden, objective="elbo", prior="normal",
                        variance="shared", sigma_min=SIGMA_MIN, levels=4):
    """The forward lines of elbo.md#whole-model-backward, written again with plain (complex-capable) numpy.
    eps: (K, N, Z); the K samples broadcast against the encoder's (N, Z) outputs instead of being stacked as rows."""
    act = ANALYTIC[activation]
    h = x
    for i in range(n_hidden):
        h = act(h @ p[f"enc.{i}.W"] + p[f"enc.{i}.b"])
    mu = h @ p["enc.mu.W"] + p["enc.mu.b"]                                       # (N, Z)
    r = h @ p["enc.logvar.W"] + p["enc.logvar.b"]
    logvar = np.where(np.real(r) > LOGVAR_MAX, LOGVAR_MAX, r)                   # min(r, 40): the clamp
    z = mu + np.exp(logvar / 2.0) * eps                                          # (K, N, Z)
    if objective == "elbo" and prior == "normal":
        kl = kl_closed_form(mu, logvar) * np.ones(eps.shape[:2])                 # (K, N): the closed form
    else:                                                                        # at the sample: log q - log p
        log_q = -0.5 * np.sum(eps * eps + logvar + LOG_2PI, axis=-1)
        if prior == "normal":
            log_p = -0.5 * np.sum(z * z + LOG_2PI, axis=-1)
        else:
            log_pi = p["prior.logits"] - _logsumexp(p["prior.logits"], 0)        # (C,)
            diff = z[..., None, :] - p["prior.mu"]                               # (K, N, C, Z)
            a = log_pi - 0.5 * np.sum(diff * diff * np.exp(-p["prior.logvar"]) + p["prior.logvar"] + LOG_2PI,
                                      axis=-1)
            log_p = _logsumexp(a, -1)
        kl = log_q - log_p
    h = z
    for i in range(n_hidden):
        h = act(h @ p[f"dec.{i}.W"] + p[f"dec.{i}.b"])
    o = h @ p["dec.out.W"] + p["dec.out.b"]                                      # (K, N, D) or (K, N, D L)
    if likelihood == "bernoulli":
        nll = np.sum(np.log1p(np.exp(o)) - x * o, axis=-1)
    elif likelihood == "categorical":
        a = np.reshape(o, o.shape[:-1] + (x.shape[1], levels))                   # (K, N, D, L)
        onehot = np.rint(x * (levels - 1))[..., None] == np.arange(levels)       # (N, D, L)
        nll = -np.sum(onehot * (a - _logsumexp(a, -1)[..., None]), axis=(-2, -1))
    else:
        raw = h @ p["dec.logvar.W"] + p["dec.logvar.b"] if variance == "per-element" else p["dec.logvar"]
        nll = gaussian_nll_formula(x, o, np.log(sigma_min**2 + np.exp(raw)))    # the variance floor
    if objective == "elbo":
        return np.mean(nll + beta * kl)
    log_w = -(nll + beta * kl)                                                   # (K, N)
    return -np.mean(_logsumexp(log_w, 0) - math.log(eps.shape[0]))


def _check_whole_model(model, x, eps, beta, objective, ref):
    """loss_and_grads against ref (the loss as a function of the params dict): the loss to 1e-12, every gradient
    to 1e-10 against complex-step derivatives, with the shape of its parameter."""
    obj = ELBO(beta) if objective == "elbo" else IWBound(beta)
    loss, grads, _ = model.loss_and_grads(x, eps, objective=obj)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in model.params.items()}
    assert float(loss) == pytest.approx(ref(params), rel=1e-12)
    problems = []
    for k, value in params.items():
        cs = complex_step_grad(lambda a, k=k: ref({**params, k: a}), value)
        err = rel_error(grads[k], cs)
        if np.shape(grads[k]) != np.shape(value) or err > 1e-10:
            problems.append(f"{k}: rel error {err:.2e}")
    assert not problems, problems
    return grads


@pytest.mark.parametrize("likelihood, variance, activation, hidden, objective, k, prior", [
    ("bernoulli", None, "tanh", (3,), "elbo", 1, "normal"), ("gaussian", "shared", "tanh", (3,), "elbo", 1, "normal"),
    ("bernoulli", None, "tanh", (), "elbo", 1, "normal"), ("gaussian", "shared", "tanh", (3, 2), "elbo", 1, "normal"),
    ("bernoulli", None, "sigmoid", (3,), "elbo", 1, "normal"),
    ("gaussian", "shared", "softplus", (3,), "elbo", 1, "normal"),
    ("bernoulli", None, "identity", (3, 2), "elbo", 1, "normal"),
    ("gaussian", "per-element", "tanh", (3,), "elbo", 1, "normal"),
    ("categorical", None, "tanh", (3,), "elbo", 1, "normal"),
    ("gaussian", "per-dim", "tanh", (3,), "elbo", 3, "normal"),               # K samples averaged, closed-form KL
    ("bernoulli", None, "tanh", (3,), "iw", 3, "normal"),                     # the IW bound, KL at the sample
    ("gaussian", "shared", "tanh", (), "iw", 3, "mog"),
    ("bernoulli", None, "tanh", (3,), "elbo", 2, "mog"),
])
def test_whole_model_backward_matches_complex_step(likelihood, variance, activation, hidden, objective, k, prior):
    """The one chain of elbo.md#whole-model-backward for every likelihood, objective, K and prior; the Gaussian's
    floor at sigma_min = 0.5, where its factor e^l / (sigma_min^2 + e^l) is far from 1."""
    rng = np.random.default_rng(15)
    N, D, Z, beta, sigma_min, levels = 4, 5, 2, 0.7, 0.5, 4
    model = VAE(D, Z, hidden=hidden, activation=activation, likelihood=likelihood, dtype="float64", seed=0,
                gaussian_variance=variance or "shared", sigma_min=sigma_min, levels=levels, prior=prior,
                prior_components=3)
    for name in model.params:                               # nonzero biases, decoder log-variance and prior
        model.params[name] = model.params[name] + 0.3 * rng.standard_normal(np.shape(model.params[name]))
    x = rng.standard_normal((N, D)) if likelihood == "gaussian" else rng.uniform(0.0, 1.0, (N, D))
    eps = rng.standard_normal((k, N, Z))
    def ref(p):
        return _reference_vae_loss(p, x, eps, beta, likelihood, activation, len(hidden), objective, prior,
                                            variance, sigma_min, levels)
    _check_whole_model(model, x, eps[0] if k == 1 else eps, beta, objective, ref)    # K = 1: eps as (N, Z)


def test_whole_model_backward_through_the_clamp():
    """Latent coordinate 1's raw log-variance is beyond LOGVAR_MAX for every example (its eps is 0, so z stays
    finite): the model reads logvar = 40 there, the KL's gradient (e^40 - 1) beta / 2N into it is stopped by the
    clamp's backward (Step 5), so its head's column gets exactly 0, and every gradient matches the complex step."""
    rng = np.random.default_rng(31)
    N, D, Z, beta = 4, 5, 2, 0.7
    model = VAE(D, Z, hidden=(3,), activation="tanh", likelihood="bernoulli", dtype="float64", seed=0)
    for name in model.params:
        model.params[name] = model.params[name] + 0.3 * rng.standard_normal(np.shape(model.params[name]))
    model.params["enc.logvar.b"][1] = LOGVAR_MAX + 5.0
    x = rng.uniform(0.0, 1.0, (N, D))
    eps = rng.standard_normal((N, Z))
    eps[:, 1] = 0.0
    _, logvar = model.encode(x)
    assert np.all(logvar[:, 1] == LOGVAR_MAX) and np.all(logvar[:, 0] < LOGVAR_MAX)
    def ref(p):
        return _reference_vae_loss(p, x, eps[None], beta, "bernoulli", "tanh", 1)
    grads = _check_whole_model(model, x, eps, beta, "elbo", ref)
    assert np.all(grads["enc.logvar.W"][:, 1] == 0.0) and grads["enc.logvar.b"][1] == 0.0
    assert np.all(grads["enc.logvar.W"][:, 0] != 0.0)


# adam.md

def test_adam_bias_correction_constant_gradient():
    rng = np.random.default_rng(16)
    g = rng.standard_normal(10) * np.logspace(-3, 3, 10)
    b1, b2 = 0.9, 0.999
    m, v = np.zeros_like(g), np.zeros_like(g)
    theta = {"w": np.zeros_like(g)}
    opt = Adam(theta, lr=1e-3, betas=(b1, b2))
    for t in range(1, 51):
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        np.testing.assert_allclose(m, (1.0 - b1 ** t) * g, rtol=1e-12)          # m_t = (1 - beta1^t) g
        np.testing.assert_allclose(m / (1.0 - b1 ** t), g, rtol=1e-12)          # m_hat = g
        np.testing.assert_allclose(v / (1.0 - b2 ** t), g * g, rtol=1e-12)      # v_hat = g^2
        opt.step({"w": g})
        np.testing.assert_allclose(opt.m["w"] / (1.0 - b1 ** t), g, rtol=1e-12)
        np.testing.assert_allclose(opt.v["w"] / (1.0 - b2 ** t), g * g, rtol=1e-12)


def test_adam_first_moment_bias_stationary():
    """E[m_t] = (1 - beta1^t) E[g] for i.i.d. gradients: many independent chains, t = 5."""
    rng = np.random.default_rng(17)
    b1, t, chains, mean_g = 0.9, 5, 400_000, 1.5
    m = np.zeros(chains)
    for _ in range(t):
        m = b1 * m + (1.0 - b1) * rng.normal(mean_g, 2.0, chains)
    ok, info = within_standard_errors(m, (1.0 - b1 ** t) * mean_g)
    assert ok, info
    ok, info = within_standard_errors(m / (1.0 - b1 ** t), mean_g)
    assert ok, info


def test_adam_first_step_magnitude_is_lr():
    g = np.array([1e-3, -0.5, 2.0, -30.0, 1e3])
    lr, eps = 1e-3, 1e-8
    for scale in (1.0, 1e4):
        theta = {"w": np.zeros_like(g)}
        Adam(theta, lr=lr, eps=eps).step({"w": scale * g})
        expected = -lr * scale * g / (np.abs(scale * g) + eps)                 # -lr g / (|g| + eps)
        np.testing.assert_allclose(theta["w"], expected, rtol=1e-12)
        np.testing.assert_allclose(np.abs(theta["w"]), lr, rtol=1e-5)         # ~ lr whatever the scale


def test_sgd_momentum_constant_gradient():
    g = np.array([0.5, -2.0, 3.0])
    lr, mu = 0.1, 0.9
    theta = {"w": np.zeros_like(g)}
    opt = SGD(theta, lr=lr, momentum=mu)
    for t in range(1, 31):
        opt.step({"w": g})
        np.testing.assert_allclose(opt.v["w"], g * (1.0 - mu ** t) / (1.0 - mu), rtol=1e-12)
        total = sum((1.0 - mu ** s) / (1.0 - mu) for s in range(1, t + 1))
        np.testing.assert_allclose(theta["w"], -lr * g * total, rtol=1e-12)


# gradcheck.md

def test_central_difference_truncation_is_order_h_squared():
    x0 = 1.0
    for h in (1e-1, 3e-2, 1e-2):
        x = np.array([x0])
        central = numerical_gradient(lambda x=x: np.sin(x), x, np.ones(1), h=h)[0]
        predicted = h * h / 6.0 * (-math.cos(x0))                 # h^2/6 f'''(x), f''' = -cos
        assert (central - math.cos(x0)) / predicted == pytest.approx(1.0, abs=2e-3)
        one_sided = (math.sin(x0 + h) - math.sin(x0)) / h
        assert (one_sided - math.cos(x0)) / (h / 2.0 * -math.sin(x0)) == pytest.approx(1.0, abs=0.1)


def _median_central_error(dtype, h, xs):
    x, hh = xs.astype(dtype), dtype(h)
    num = ((np.sin(x + hh) - np.sin(x - hh)) / (dtype(2) * hh)).astype(np.float64)
    exact = np.cos(xs)
    return float(np.median(np.abs(num - exact) / np.maximum(np.abs(num) + np.abs(exact), 1e-8)))


def test_step_size_near_optimum_in_float64_not_in_float32():
    xs = np.random.default_rng(18).uniform(-2.0, 2.0, 1000)
    eps64 = np.finfo(np.float64).eps
    assert 0.5 < gradcheck.H / eps64 ** (1 / 3) < 2.0        # minivae's default step is the note's optimum
    e64 = {h: _median_central_error(np.float64, h, xs) for h in (1e-2, 1e-3, gradcheck.H, 1e-7, 1e-9)}
    assert e64[gradcheck.H] < 1e-10
    assert e64[gradcheck.H] < min(e64[1e-2], e64[1e-3], e64[1e-7], e64[1e-9])   # truncation left, roundoff right
    e32 = {h: _median_central_error(np.float32, h, xs) for h in (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5)}
    assert min(e32.values()) > 1e-6                                      # float32 cannot get near 1e-10
    assert e32[1e-5] > 1e-4                                              # and minivae's h is far off for it


def test_rel_error_formula():
    rng = np.random.default_rng(19)
    a, b = rng.standard_normal(20), rng.standard_normal(20)
    a[:3] = b[:3] = 0.0
    a[3], b[3] = 1e-12, 2e-12
    direct = np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), 1e-8))
    assert rel_error(a, b) == pytest.approx(direct, rel=1e-15)
    assert rel_error(b, a) == rel_error(a, b)                           # symmetric
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0                   # 0 against 0 is no error
    assert rel_error(1e3 * a[4:], 1e3 * b[4:]) == pytest.approx(rel_error(a[4:], b[4:]), rel=1e-12)


def test_all_ones_upstream_hides_a_missing_upstream_factor():
    rng = np.random.default_rng(20)
    x, a = rng.uniform(0.0, 1.0, (3, 4)), rng.standard_normal((3, 4))
    def wrong(dnll, cache):
        return special.expit(cache[1]) - cache[0]      # forgets dnll[:, None]
    def f():
        return bernoulli_nll_forward(x, a)[0]
    _, cache = bernoulli_nll_forward(x, a)
    ones, rand = np.ones(3), rng.standard_normal(3)
    assert rel_error(wrong(ones, cache), numerical_gradient(f, a, ones)) < 1e-8        # passes with ones
    assert rel_error(wrong(rand, cache), numerical_gradient(f, a, rand)) > 0.1         # caught with random
    assert rel_error(bernoulli_nll_backward(rand, cache), numerical_gradient(f, a, rand)) < 1e-8


def test_per_element_differencing_reduces_roundoff():
    rng = np.random.default_rng(21)
    x = np.array([0.3, -0.7, 1.1])
    big = 1e6 * rng.standard_normal(100)                    # outputs that x does not touch
    dout = rng.standard_normal(103)
    def f():
        return np.concatenate([np.sin(x), big])
    exact = np.cos(x) * dout[:3]
    h = 1e-5
    naive = np.zeros(3)
    for i in range(3):                                      # difference the weighted sums instead
        old = x[i]
        x[i] = old + h
        pos = np.sum(f() * dout)
        x[i] = old - h
        neg = np.sum(f() * dout)
        x[i] = old
        naive[i] = (pos - neg) / (2.0 * h)
    assert rel_error(numerical_gradient(f, x, dout, h=h), exact) < 1e-9
    assert rel_error(naive, exact) > 1e-7


def test_directional_derivative_matches_gradient():
    rng = np.random.default_rng(22)
    params = {"a": rng.standard_normal((5, 4)), "b": rng.standard_normal(30)}
    c = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    def f():
        return sum(np.sum(c[k] * np.sin(params[k])) for k in params)
    grads = {k: c[k] * np.cos(params[k]) for k in params}
    assert directional_check(f, params, grads) < 1e-8
    wrong = {k: g.copy() for k, g in grads.items()}
    wrong["b"][7] += 1e-2
    assert directional_check(f, params, wrong) > 1e-6


def _small_vae(rng):
    model = VAE(4, 2, hidden=(3,), activation="tanh", likelihood="bernoulli", dtype="float64", seed=1)
    return model, rng.uniform(0.0, 1.0, (3, 4)), rng.standard_normal((3, 2))


def test_redrawn_noise_breaks_the_check():
    rng = np.random.default_rng(23)
    model, x, eps = _small_vae(rng)
    _, grads, _ = model.loss_and_grads(x, eps)
    fixed = directional_check(lambda: model.loss_and_grads(x, eps)[0], model.params, grads)
    redrawn = directional_check(lambda: model.loss_and_grads(x, rng.standard_normal(eps.shape))[0],
                                model.params, grads)
    assert fixed < 1e-7
    assert redrawn > 0.5


def test_saturated_tanh_is_ill_conditioned():
    x = np.array([15.0])
    true_derivative = 4.0 * math.exp(-30.0) / (1.0 + math.exp(-30.0)) ** 2
    y = np.tanh(x)
    assert abs((1.0 - y[0] * y[0]) - true_derivative) / true_derivative > 1e-5     # the forward lost digits
    dout = np.array([0.8])
    assert numerical_gradient(lambda: np.tanh(x), x, dout)[0] == 0.0               # no correct digit left
    # rel_error judges a gradient below its 1e-8 floor absolutely: a few 1e-6, still over the 1e-6 op tolerance
    assert check_backward(tanh_forward, tanh_backward, [x])[0] > 1e-6
    moderate = np.random.default_rng(24).uniform(-2.0, 2.0, (3, 4))
    assert check_backward(tanh_forward, tanh_backward, [moderate])[0] < 1e-8



def test_saturated_tanh_rel_error_scales_with_the_upstream_gradient():
    """At tanh(15) the analytic gradient 3.7e-13 dy is below rel_error's 1e-8 floor: it reports 3.7e-5 |dy|, from
    4.6e-8 to 7.6e-5 over seeds 0-19, and fails the 1e-6 tolerance exactly when |dy| > 0.027 (gradcheck.md)."""
    x = np.array([15.0])
    errors, dys = [], []
    for seed in range(20):
        errors.append(check_backward(tanh_forward, tanh_backward, [x], seed=seed)[0])
        dys.append(abs(np.random.default_rng(seed).standard_normal(1)[0]))   # check_backward's dy
    errors, dys = np.array(errors), np.array(dys)
    np.testing.assert_allclose(errors / dys, 4 * math.exp(-30.0) / 1e-8, rtol=1e-3)    # 3.7e-5 |dy|
    assert errors.min() == pytest.approx(4.6e-8, rel=0.05) and errors.max() == pytest.approx(7.6e-5, rel=0.05)
    assert np.all((errors > 1e-6) == (dys > 0.027))



def test_adam_step_is_bounded_by_kingma_and_ba():
    """adam.md: |step| <= lr (1 - beta1) / sqrt(1 - beta2) = 3.16 lr at the defaults, and a gradient of 1 after
    2,999 zero gradients nearly reaches it (3.08 lr); random gradients with rare spikes stay under it too."""
    p = {"w": np.zeros(1)}
    opt = Adam(p, lr=1e-3)
    for _ in range(2999):
        opt.step({"w": np.zeros(1)})
    before = p["w"].copy()
    opt.step({"w": np.ones(1)})
    bound = 0.1 / math.sqrt(0.001)
    assert abs(p["w"][0] - before[0]) / 1e-3 == pytest.approx(3.0827, abs=1e-4) and 3.08 < bound < 3.17
    rng = np.random.default_rng(30)
    p = {"w": np.zeros(50)}
    opt = Adam(p, lr=1e-3)
    for _t in range(3000):
        g = rng.standard_normal(50) * np.where(rng.uniform(size=50) < 0.01, 100.0, 0.01)
        before = p["w"].copy()
        opt.step({"w": g})
        assert np.max(np.abs(p["w"] - before)) <= bound * 1e-3 * (1 + 1e-9)



def test_naive_bernoulli_loss_keeps_about_six_and_a_half_digits_in_float64():
    """likelihoods.md: softplus(20) - 20 at x = 1 in float64: 2.9e-7 relative error here, at most half a
    spacing of 20 over the loss, 8.6e-7; in float32 the difference is 0."""
    exact = math.log1p(math.exp(-20.0))                                       # 2.06e-9
    naive = (np.float64(20.0) + np.log1p(np.exp(np.float64(-20.0)))) - np.float64(20.0)
    assert abs(naive - exact) / exact == pytest.approx(2.88e-7, rel=0.01)
    assert np.spacing(20.0) / 2 / exact == pytest.approx(8.62e-7, rel=0.01)
    assert 6.0 < -math.log10(abs(naive - exact) / exact) < 7.0
    assert (np.float32(20.0) + np.float32(exact)) - np.float32(20.0) == 0.0


def test_one_minus_x_is_exact_only_from_one_half():
    """likelihoods.md: 1 - x is exact for x in [1/2, 1] (Sterbenz), rounded below: 1 - 1e-20 is 1; never < 0."""
    from fractions import Fraction
    rng = np.random.default_rng(31)
    for x in np.concatenate([rng.uniform(0.5, 1.0, 1000), [0.5, 1.0]]):
        assert Fraction(float(1.0 - x)) == 1 - Fraction(float(x))
    assert 1.0 - 1e-20 == 1.0 and Fraction(1.0 - 0.1) != 1 - Fraction(0.1)
    assert np.all(1.0 - rng.uniform(0.0, 0.5, 1000) >= 0.0)


# evaluation.md

def test_an_inactive_unit_can_carry_two_nats():
    """evaluation.md#active-units: codes mu(x) with variance 0.005 are below the 0.01 threshold, yet with
    q = N(mu(x), 0.01^2) the information I(x; z) = 1/2 log(1 + 0.005 / 0.01^2) = 1/2 log 51 ~ 1.97 nats
    (Monte Carlo of E[log q(z|x) - log q(z)], q(z) = N(0, 0.005 + s^2), against the closed form)."""
    rng = np.random.default_rng(32)
    s, var_mu = 0.01, 0.005
    mu = rng.normal(0.0, math.sqrt(var_mu), 200_000)
    assert np.var(mu) < 0.01                                                     # inactive by the threshold
    z = mu + s * rng.standard_normal(mu.shape)
    info = stats.norm.logpdf(z, mu, s) - stats.norm.logpdf(z, 0.0, math.sqrt(var_mu + s * s))
    assert np.mean(info) == pytest.approx(0.5 * math.log(51.0), abs=4 * np.std(info) / math.sqrt(len(info)))
    assert 0.5 * math.log(51.0) == pytest.approx(1.97, abs=0.005)


def test_log_weight_formula():
    """log q(z|x) written with eps = (z - mu)/sigma equals scipy's density; log p(z) likewise."""
    rng = np.random.default_rng(25)
    mu, logvar, eps = rng.standard_normal(3), rng.uniform(-1, 1, 3), rng.standard_normal((10, 3))
    sigma = np.exp(logvar / 2.0)
    z = mu + sigma * eps
    log_q = -0.5 * np.sum(eps * eps + logvar + LOG_2PI, axis=1)
    log_p = -0.5 * np.sum(z * z + LOG_2PI, axis=1)
    np.testing.assert_allclose(log_q, np.sum(stats.norm.logpdf(z, mu, sigma), axis=1), rtol=1e-12)
    np.testing.assert_allclose(log_p, np.sum(stats.norm.logpdf(z), axis=1), rtol=1e-12)


def test_logsumexp_shift_identity():
    from minivae.logsumexp import logsumexp
    for a in (np.array([1000.0, 1000.0]), np.array([-1000.0, -1000.0]), np.array([3.0, -2.0, 0.5, 700.0])):
        m = np.max(a)
        shifted = m + np.log(np.sum(np.exp(a - m)))
        assert 1.0 <= np.sum(np.exp(a - m)) <= a.size
        np.testing.assert_allclose(shifted, special.logsumexp(a), rtol=1e-15)
        np.testing.assert_allclose(logsumexp(a, axis=0), special.logsumexp(a), rtol=1e-15)
    with np.errstate(over="ignore", divide="ignore"):
        assert np.log(np.sum(np.exp(np.array([1000.0, 1000.0])))) == np.inf         # the naive form
        assert np.log(np.sum(np.exp(np.array([-1000.0, -1000.0])))) == -np.inf
    assert special.logsumexp([1000.0, 1000.0]) == pytest.approx(1000.0 + math.log(2.0), rel=1e-15)


def test_subset_average_identity():
    """minivae's iw_bound_forward against the note's formula: L_K = log (1/K) sum_i w_i, equal weights give the
    log-weight itself, and the average of L_m over m-subsets rises with m to L_K (the monotonicity argument)."""
    from minivae.iwae import iw_bound_forward
    log_w = np.log(np.random.default_rng(26).exponential(size=(6, 3)))
    L = iw_bound_forward(log_w)[0]
    np.testing.assert_allclose(L, np.log(np.mean(np.exp(log_w), axis=0)), rtol=1e-13)
    np.testing.assert_allclose(iw_bound_forward(np.full((5, 2), -3.7))[0], -3.7, rtol=1e-15)
    means = [np.mean([iw_bound_forward(log_w[list(idx)])[0] for idx in itertools.combinations(range(6), m)], axis=0)
             for m in range(1, 7)]
    assert all(np.all(a <= b + 1e-14) for a, b in itertools.pairwise(means))
    np.testing.assert_allclose(means[-1], L, rtol=1e-14)


def test_iw_bound_properties_linear_gaussian():
    A, c, s2, x = _linear_gaussian()
    Z, D = A.shape
    log_px = stats.multivariate_normal.logpdf(x, c, A.T @ A + s2 * np.eye(D))
    def log_joint(z):
        return np.sum(stats.norm.logpdf(x, loc=z @ A + c, scale=math.sqrt(s2)), axis=-1) + np.sum(
            stats.norm.logpdf(z), axis=-1)                                                # log p(x|z) + log p(z)
    # q = the exact posterior: every weight equals p(x), so log p_k = log p(x) for every k
    P = np.eye(Z) + A @ A.T / s2
    S_post, m_post = np.linalg.inv(P), np.linalg.solve(P, A @ (x - c)) / s2
    z = np.random.default_rng(27).multivariate_normal(m_post, S_post, size=7)
    log_w = log_joint(z) - stats.multivariate_normal.logpdf(z, m_post, S_post)
    np.testing.assert_allclose(log_w, log_px, rtol=1e-12)
    # a diagonal q that is not the posterior: ELBO = L_1 < L_10 < L_100 <= log p(x)
    m, logvar = np.array([0.3, -0.4]), np.array([-0.7, 0.2])
    sigma = np.exp(logvar / 2.0)
    elbo = _expected_loglik(x, A, c, s2, m, np.diag(sigma ** 2)) - kl_closed_form(m, logvar)
    rng = np.random.default_rng(28)
    reps = 4000
    L = {}
    for k in (1, 10, 100):
        eps = rng.standard_normal((reps, k, Z))
        z = m + sigma * eps
        lw = log_joint(z) + 0.5 * np.sum(eps * eps + logvar + LOG_2PI, axis=-1)        # (reps, k)
        L[k] = special.logsumexp(lw, axis=1) - math.log(k)
    ok, info = within_standard_errors(L[1], elbo)
    assert ok, info
    means = {k: float(np.mean(v)) for k, v in L.items()}
    assert elbo < means[10] < means[100]
    se100 = np.std(L[100], ddof=1) / math.sqrt(reps)
    assert means[100] <= log_px + 4 * se100
    assert log_px - means[100] < 0.2 * (log_px - elbo)                                # the gap closes


def test_trapezoid_error_on_a_gaussian():
    """minivae's exact_log_px (trapezoid rule) on a linear-Gaussian model, z_dim 1: p(x) = N(b, W^T W + var I) in
    closed form, and the rule's error is as small as the note's Poisson bound says (spectrally small)."""
    from minivae.evaluate import exact_log_px
    from minivae.model import VAE
    model = VAE(4, 1, hidden=(), likelihood="gaussian", dtype="float64", seed=3)
    r = np.random.default_rng(103)
    for p in model.params.values():
        p += 0.5 * r.standard_normal(p.shape)
    x = np.random.default_rng(2).standard_normal((5, 4))
    W, b = model.params["dec.out.W"], model.params["dec.out.b"]
    var = model.config["sigma_min"] ** 2 + float(np.exp(model.params["dec.logvar"]))
    truth = stats.multivariate_normal(b, W.T @ W + var * np.eye(4)).logpdf(x)
    ex = exact_log_px(model, x, tol=1e-9)
    np.testing.assert_allclose(ex["per_example"], truth, rtol=1e-9)


def test_kl_decomposition_identity():
    """mean_n KL(q_n || p) = I_q + KL(q || p) for a 1-D mixture q = mean_n q_n, all by numerical integration;
    0 <= I_q <= log N, and I_q = 0 when every q_n is the same."""
    mu, sd = np.array([-1.0, 0.2, 0.9, 2.0]), np.array([0.5, 0.8, 0.3, 1.1])
    N = mu.size

    def pieces(mu, sd):
        def q_n(t):
            return stats.norm.pdf(t, mu, sd)                                      # (N,)
        def q(t):
            return np.mean(q_n(t))
        def quad(f):
            return integrate.quad(f, -15, 15, limit=400, epsabs=1e-13, epsrel=1e-12)[0]
        info = np.mean([quad(lambda t, i=i: q_n(t)[i] * (stats.norm.logpdf(t, mu[i], sd[i]) - np.log(q(t))))
                        for i in range(N)])
        marginal = quad(lambda t: q(t) * (np.log(q(t)) - stats.norm.logpdf(t)))
        mean_kl = np.mean(kl_closed_form(mu[:, None], np.log(sd[:, None] ** 2)))
        return info, marginal, mean_kl

    info, marginal, mean_kl = pieces(mu, sd)
    assert info + marginal == pytest.approx(mean_kl, rel=1e-9)
    assert 0.0 < info <= math.log(N) and marginal > 0.0
    info0, marginal0, mean_kl0 = pieces(np.full(N, 0.4), np.full(N, 0.6))
    assert abs(info0) < 1e-10 and marginal0 == pytest.approx(mean_kl0, rel=1e-9)
