"""The task forge: bugs injected into a real PyPI package, kept only when its own tests
catch them and the reverse patch fixes them (SWE-smith style).

Pipeline for one ``NAME==VERSION``:

1. **Baseline.** A pristine image of the package (an ImageBuilder task image with no
   setup patch) runs the package's own suite twice in the grader's hardened sandbox; only
   tests that pass both times count (`stable_passes`): a flaky test never becomes
   FAIL_TO_PASS.
2. **Candidates.** `finder.find_mutations` over the library files (never tests), in a
   seeded order that cycles through the mutation kinds and files.
3. **Screening.** Candidates run in batches inside one sandbox per batch (apply, run the
   suite, restore): a candidate survives when some stable test fails, pytest finished, and
   nothing failed to import or collect.
4. **Tasks.** A survivor becomes a task: FAIL_TO_PASS = the stable tests it breaks (names as
   swebench's pytest parser prints them), PASS_TO_PASS = the other stable tests of the same
   test files; ``test_patch`` re-creates those test files; ``setup_patch`` injects the bug
   *and* deletes them, so the agent never sees the hidden tests; ``patch`` (gold) reverts
   the bug. Deduplicated: one task per mutated location, one per FAIL_TO_PASS set.
5. **Validation.** Every task is built and graded with the gold and the empty patch by the
   same `validate_tasks` that ``ratchet bench validate`` runs; only valid tasks are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmark import _docker
from benchmark._grading import _trusted_pytest_block
from benchmark._images import SANDBOX_USER, ImageBuilder
from benchmark._grader import Grader
from benchmark._sources import _sdist_members, download_sdist
from benchmark._task import PypiSource, TaskEnvironment, TaskSpec
from benchmark._validate import validate_tasks
from benchmark.forge.baseline import BaselineError, baseline_error, needs_older_pytest
from benchmark.forge.packages import (
    DEFAULT_PYTEST,
    FALLBACK_PYTEST,
    ForgeInputError,
    detect_tests,
    pytest_plugins_in,
    pytest_requirements,
    read_facts,
    resolve_deps,
)
from benchmark.forge.finder import find_mutations
from benchmark.forge.mutations import (
    KINDS,
    Mutation,
    apply_mutation,
    is_library_file,
)
from benchmark.forge.curriculum import Curriculum, draw_order
from benchmark.forge.difficulty import estimate_difficulty
from benchmark.forge.statements import write_statement
from benchmark.forge.structural import COMBINED, combined_mutations

__all__ = [
    "PYTEST_DEPS",
    "RECIPES",
    "Forge",
    "ForgeReport",
    "PackageRecipe",
    "merge_tasks",
    "split_of",
    "stable_passes",
]

# The test runner, pinned as the quickstart suite pins it (one shared environment layer).
PYTEST_DEPS = tuple(pytest_requirements(DEFAULT_PYTEST))


@dataclass(frozen=True)
class PackageRecipe:
    """How a package's environment is built and its own suite is run. Anything left None
    is found from the sdist when the forge starts (`complete_recipe`); the completed
    recipe is recorded in every task (``forge.recipe``) so the run can be repeated."""

    requirement: str
    deps: tuple[str, ...] = ()
    """Extra dependencies, pinned (installed offline from the wheelhouse)."""
    test_opts: str | None = None
    """pytest options that every run needs, e.g. ``-o addopts=``; part of the task's test_cmd."""
    test_paths: str | None = None
    """Where the suite is, for the baseline and screening runs (graded runs name files)."""
    pytest_version: str | None = None
    """The test runner; None: DEFAULT_PYTEST, with one fallback to FALLBACK_PYTEST."""
    resolve: bool = True
    """Resolve the package's own requirements from its sdist (the built-in recipes list
    theirs by hand and keep their measured environments)."""
    pins: tuple[str, ...] | None = None
    """The environment's requirements, all pinned, once resolved (pytest included)."""
    pytest_plugins: tuple[str, ...] = ()
    """Plugin modules among the pins: loaded with ``-p`` (grading turns autoload off)."""
    detected: tuple[str, ...] = ()
    """What was found rather than given, in words."""

    @property
    def name(self) -> str:
        return self.requirement.split("==")[0]

    @property
    def version(self) -> str:
        return self.requirement.split("==")[1]

    @property
    def pytest(self) -> str:
        return self.pytest_version or DEFAULT_PYTEST

    def python_deps(self) -> tuple[str, ...]:
        if self.pins is not None:
            return self.pins
        return tuple(dict.fromkeys(tuple(pytest_requirements(self.pytest)) + self.deps))

    def record(self) -> dict:
        """What a task keeps of its recipe: enough to forge it again the same way."""
        return {"pytest": self.pytest, "deps": list(self.deps), "test_opts": self.test_opts or "",
                "test_paths": self.test_paths or "", "pytest_plugins": list(self.pytest_plugins),
                "detected": list(self.detected)}


def _known(requirement: str, *, deps: tuple[str, ...] = (), test_opts: str = "",
           test_paths: str = "") -> PackageRecipe:
    return PackageRecipe(requirement, deps=deps, test_opts=test_opts, test_paths=test_paths,
                         pytest_version=DEFAULT_PYTEST, resolve=False)


RECIPES = {r.requirement: r for r in (
    _known("cachetools==8.0.1"),
    _known("semver==3.1.1", test_opts="-o addopts=", test_paths="tests"),
    _known("parse==1.22.4", test_opts="-o addopts=", test_paths="tests"),
    _known("voluptuous==0.16.0"),
    _known("xmltodict==1.0.4", test_paths="tests"),
    _known("python-slugify==9.2.0", deps=("text-unidecode==1.3",), test_opts="--color=no"),
    _known("schema==0.7.8", deps=("mock==5.2.0",), test_paths="test_schema.py"),
    _known("pytz==2026.6", test_paths="pytz/tests"),
    _known("tabulate==0.10.0", test_paths="test"),
)}


def complete_recipe(recipe: PackageRecipe, files: dict[str, bytes],
                    wheelhouse: Callable[[list[str]], Path] | None = None) -> PackageRecipe:
    """`recipe` with what it leaves open found from the sdist's `files`: its test paths and
    options, its requirements resolved and pinned (with pytest), its pytest plugins (from
    the wheels `wheelhouse` fetches). Refuses a package that is not pure Python."""
    facts = read_facts(recipe.requirement, files)
    if facts.native:
        raise ForgeInputError(
            f"{recipe.requirement} is not a pure-Python package ({'; '.join(facts.native)}): "
            "a forged task needs a library the agent can fix in Python. Pick a pure-Python package.")
    detected: list[str] = []
    test_paths, test_opts = recipe.test_paths, recipe.test_opts
    if test_paths is None or test_opts is None:
        layout = detect_tests(files, recipe.name)
        detected += layout.notes
        test_paths = layout.test_paths if test_paths is None else test_paths
        test_opts = layout.test_opts if test_opts is None else test_opts
    pins, plugins = recipe.pins, recipe.pytest_plugins
    if recipe.resolve and pins is None:
        pins, notes = resolve_deps(facts, recipe.pytest, extra=recipe.deps)
        detected += notes + [f"build backend: {facts.backend}"]
        if wheelhouse is not None:
            plugins = pytest_plugins_in(wheelhouse(list(pins)), pins)
            if plugins:
                detected.append(f"pytest plugins loaded with -p: {', '.join(plugins)}")
    return replace(recipe, test_paths=test_paths, test_opts=test_opts, pins=pins,
                   pytest_plugins=plugins,
                   detected=tuple(dict.fromkeys(recipe.detected + tuple(detected))))

_PYTEST = "python -m pytest -rA -p no:cacheprovider"
# The grader used to hand its eval script (test patch inlined) to `bash -c`, where one
# argument may not exceed Linux's MAX_ARG_STRLEN (128 KiB): candidates were skipped past
# 120,000 bytes, which biased tasks toward small test files (webob lost 15 of 28). The
# script now travels as a file (`_docker._with_script`); this cap only keeps a hidden test
# patch to a size a grading log and a reader can hold.
MAX_TEST_PATCH_BYTES = 2_000_000
_START, _EXIT, _END = ">>>>> FORGE START", ">>>>> FORGE EXIT", ">>>>> FORGE END"


def stable_passes(runs: Iterable[dict[str, str]]) -> set[str]:
    """Tests that PASSED in every run: one failure (a flaky test) excludes it for good."""
    runs = list(runs)
    if not runs:
        return set()
    passing = [{t for t, s in run.items() if s == "PASSED"} for run in runs]
    return set.intersection(*passing)


def usable_statuses(statuses: dict[str, str], dupes: list[str]) -> dict[str, str]:
    """The baseline statuses a task may use: not a name pytest printed twice, and not a
    test *in a library module* (a doctest, or a test function in the package's code): as
    FAIL_TO_PASS it would make the mutated module a hidden test file, deleted from the
    agent's tree and re-created, bug-free, by the test patch."""
    return {t: s for t, s in statuses.items()
            if t not in dupes and not is_library_file(t.split("::")[0])}


def screening_timeout(baseline_outputs: list[str]) -> int:
    """A screening run's limit: five times the slowest baseline run plus 20 s, at least
    30 s (room for a machine that gets busier). A mutation that loops forever (a dropped
    ``break``, an inverted ``while``) costs this much, not a flat two minutes; one that
    slows the suite fivefold is no task anyway (its grading would time out)."""
    return max(30, int(5 * slowest_run(baseline_outputs)) + 20)


def slowest_run(outputs: list[str], default: float = 30.0) -> float:
    """The longest duration pytest reported in its closing lines (`default` if none did)."""
    durations = [float(m.group(1)) for out in outputs
                 for m in [re.search(r"(?m)^=+ .* in ([0-9.]+)s", out)] if m]
    return max(durations, default=default)


def split_of(instance_id: str, heldout_percent: int = 20) -> str:
    """A fixed split: ``heldout`` for ~`heldout_percent`% of ids, by a hash of the id."""
    bucket = int(hashlib.sha256(instance_id.encode()).hexdigest(), 16) % 100
    return "heldout" if bucket < heldout_percent else "train"


def parse_pytest(output: str) -> tuple[dict[str, str] | None, list[str]]:
    """(status map, names seen more than once) of one pytest run, or (None, why)."""
    from swebench.harness.log_parsers import PARSER_REGISTRY

    block, why = _trusted_pytest_block(output)
    if block is None:
        return None, [why or "no summary"]
    statuses = PARSER_REGISTRY["parse_log_pytest"](block, None)
    names = Counter(line.split()[1] for line in block.splitlines()
                    if re.match(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED) \S", line))
    return statuses, [n for n, c in names.items() if c > 1]


def _git_diff(before: dict[str, bytes | None], after: dict[str, bytes | None]) -> str:
    """A git diff from one set of files to another (None: the file is absent)."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "forge", "GIT_AUTHOR_EMAIL": "forge@localhost",
           "GIT_COMMITTER_NAME": "forge", "GIT_COMMITTER_EMAIL": "forge@localhost"}
    with tempfile.TemporaryDirectory() as tmp:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-c", "core.autocrlf=false", *args], cwd=tmp, env=env,
                                  check=True, capture_output=True).stdout.decode("utf-8")

        def write(files: dict[str, bytes | None]) -> None:
            for path, data in files.items():
                target = Path(tmp) / path
                if data is None:
                    target.unlink(missing_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)

        git("init", "-q")
        write(before)
        git("add", "-A")
        git("commit", "-q", "--allow-empty", "-m", "before")
        write(after)
        git("add", "-A")
        return git("diff", "--cached", "--no-color", "--no-ext-diff", "--no-renames")


@dataclass
class Candidate:
    """A mutation that passed screening, with what its run showed."""

    mutation: Mutation
    fail_to_pass: list[str]
    pass_to_pass: list[str]
    output: str


@dataclass
class ForgeReport:
    """Counts and timings of one forge, per strategy."""

    package: str
    strategy: str
    sites: int = 0
    stable_tests: int = 0
    flaky_excluded: int = 0
    screened: int = 0
    broke_tests: int = 0
    duplicates: int = 0
    too_big: int = 0
    """Candidates whose hidden test files exceed MAX_TEST_PATCH_BYTES (not gradable)."""
    validated: int = 0
    kept: int = 0
    invalid: list[str] = field(default_factory=list)
    kinds_tried: dict[str, int] = field(default_factory=dict)
    kinds_kept: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def seconds_per_kept(self) -> float | None:
        return self.seconds / self.kept if self.kept else None

    def as_dict(self) -> dict:
        data = dict(self.__dict__)
        data["seconds"] = round(self.seconds, 1)
        data["seconds_per_kept"] = round(self.seconds_per_kept, 1) if self.kept else None
        return data


class Forge:
    """Forges validated tasks from one pinned package."""

    def __init__(self, recipe: PackageRecipe, grader: Grader, *, workers: int = 2,
                 on_event: Callable[[str], None] = lambda message: None,
                 candidate_timeout_s: int = 120, batch_size: int = 8,
                 complete: Callable[[list[dict]], str] | None = None,
                 statement_model: Callable[[list[dict]], str] | None = None,
                 statement_calls: int = 60, curriculum: Curriculum | None = None):
        self.recipe = recipe
        self.curriculum = curriculum
        """Where a run's best agent fails most (``--target RUN``): candidates of those kinds
        come first, and each task records why it was forged."""
        self.complete = complete
        """The model for the LM strategy (messages → text); default: the OpenAI endpoint."""
        self.statement_model = statement_model
        """The model that writes problem statements (None: the deterministic writer only)."""
        self.statement_calls = statement_calls
        """Budget: model calls left for statements; past it, statements are deterministic."""
        self._stable: tuple[set[str], int] | None = None
        self.grader = grader
        self.builder: ImageBuilder = grader.builder
        self.workers = max(1, workers)
        self.say = on_event
        self.candidate_timeout_s = candidate_timeout_s
        self.batch_size = batch_size
        self.files = self._read_sdist()
        self.recipe = complete_recipe(recipe, self.files, self.builder.wheelhouse)
        self._image = ""  # the pristine image, once its baseline ran
        for line in self.recipe.detected:
            self.say(f"{recipe.requirement}: {line}")

    # inputs -----------------------------------------------------------------------------

    def _read_sdist(self) -> dict[str, bytes]:
        return {name: data for name, data, _mode, link in _sdist_members(download_sdist(self.recipe.requirement))
                if data is not None and not link}

    def environment(self) -> TaskEnvironment:
        test_cmd = f"{_PYTEST} {self.recipe.test_opts or ''}".strip()
        return TaskEnvironment(python_deps=self.recipe.python_deps(), test_cmd=test_cmd,
                               timeout_s=600, pytest_plugins=self.recipe.pytest_plugins)

    def pristine_task(self) -> TaskSpec:
        """The package as released, as a task-like image spec (no bug, no hidden tests)."""
        name, version = self.recipe.name, self.recipe.version
        return TaskSpec.model_construct(
            instance_id=f"{name}__{name}-{version}__pristine", repo=name, base_commit="",
            problem_statement="", patch="", test_patch="", FAIL_TO_PASS=(), PASS_TO_PASS=(),
            version=version, environment_setup_commit="", hints_text="", created_at="",
            source=PypiSource(requirement=self.recipe.requirement), environment=self.environment(),
            image=None)

    # sandbox runs -----------------------------------------------------------------------

    def _suite_cmd(self) -> str:
        return (f"{_PYTEST} --tb=short {self.recipe.test_opts or ''} "
                f"{self.recipe.test_paths or ''}").strip()

    def _run_env(self) -> list[str]:
        """The test environment grading uses (`_wrapper`): the working directory is not on
        sys.path, plugins load only when named; so what passes here passes when graded."""
        plugins = " ".join(f"-p {p}" for p in self.recipe.pytest_plugins)
        return ["export PYTHONDONTWRITEBYTECODE=1 PYTHONSAFEPATH=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1",
                *([f"export PYTEST_ADDOPTS='{plugins}'"] if plugins else [])]

    def _run_batch(self, image: str, patches: list[str], timeout_s: int | None = None) -> list[str]:
        """Run the suite once per patch ('' = unchanged) in one hardened sandbox; one pytest
        output per patch ('' where the patch did not apply)."""
        limit = timeout_s or self.candidate_timeout_s
        script = ["cd /testbed", *self._run_env()]
        for index, patch in enumerate(patches):
            apply = f"git apply /forge/{index}.patch" if patch else "true"
            script.append(
                f"echo '{_START} {index}'; if {apply}; then "
                f"timeout -k 5 {limit} {self._suite_cmd()} 2>&1; "
                f"echo \"{_EXIT} {index} $?\"; git checkout -q -- . ; fi; echo '{_END} {index}'")
        files = {f"forge/{i}.patch": p for i, p in enumerate(patches) if p}
        run = _docker.run_script(image, "\n".join(script) + "\n",
                                 archives=[("/", _docker.make_tar(files or {"forge/.keep": ""}))],
                                 timeout_s=60 + len(patches) * (limit + 10),
                                 limits=self.grader.limits, user=SANDBOX_USER)
        outputs = []
        for index in range(len(patches)):
            _, _, rest = run.log.partition(f"{_START} {index}\n")
            body, _, _ = rest.partition(f"{_END} {index}")
            body, exit_mark, _ = body.partition(f"{_EXIT} {index}")
            outputs.append(body if exit_mark else "")
        return outputs

    BASELINE_TIMEOUT_S = 600

    def baseline(self, image: str, runs: int = 2) -> tuple[set[str], int]:
        """(tests passing in every one of `runs` runs, how many passed only sometimes).
        Raises BaselineError, with the log kept as ``baseline.log`` in the run folder,
        when a run did not finish or no test passed: then nothing is worth screening.
        Screening's per-candidate limit grows to three times a slow suite's run."""
        outputs = self._run_batch(image, [""] * runs, timeout_s=self.BASELINE_TIMEOUT_S)
        self.candidate_timeout_s = screening_timeout(outputs)
        slowest = slowest_run(outputs, default=0.0)
        if slowest > 60:
            self.say(f"one run of the suite takes about {slowest:.0f}s: every screened candidate "
                     "costs as much (two at a time); --test-paths can narrow the suite")
        log = Path(self.grader.out_dir) / "baseline.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(f"===== baseline run {i + 1}: {self._suite_cmd()}\n{o}\n"
                               for i, o in enumerate(outputs)), encoding="utf-8")
        maps = []
        for output in outputs:
            statuses, dupes = parse_pytest(output)
            if statuses is None:
                raise baseline_error(self.recipe.requirement, output,
                                     f"a run did not end with pytest's summary: {dupes[0]}", log,
                                     self.recipe.test_paths or "", self.BASELINE_TIMEOUT_S)
            maps.append(usable_statuses(statuses, dupes))
        stable = stable_passes(maps)
        if not stable:
            raise baseline_error(self.recipe.requirement, outputs[-1], "no test passed", log,
                                 self.recipe.test_paths or "", self.BASELINE_TIMEOUT_S)
        ever = set().union(*({t for t, s in m.items() if s == "PASSED"} for m in maps))
        return stable, len(ever - stable)

    def pristine_baseline(self) -> tuple[str, tuple[set[str], int]]:
        """The pristine image and its baseline; when the default pytest rejects the
        package's own pytest code, once more with FALLBACK_PYTEST (recorded in the recipe)."""
        image = self.builder.ensure_task(self.pristine_task())
        try:
            return image, self.baseline(image)
        except BaselineError as exc:
            if self.recipe.pytest_version is not None or not needs_older_pytest(exc.output):
                raise
            self.say(f"pytest {DEFAULT_PYTEST} cannot run this suite; trying pytest {FALLBACK_PYTEST}")
            self.recipe = complete_recipe(
                replace(self.recipe, pytest_version=FALLBACK_PYTEST, pins=None,
                        detected=self.recipe.detected + (
                            f"pytest {FALLBACK_PYTEST}: pytest {DEFAULT_PYTEST} failed its baseline",)),
                self.files, self.builder.wheelhouse)
            image = self.builder.ensure_task(self.pristine_task())
            return image, self.baseline(image)

    # candidates -------------------------------------------------------------------------

    def library_files(self) -> dict[str, str]:
        out = {}
        for path, data in sorted(self.files.items()):
            if is_library_file(path):
                try:
                    out[path] = data.decode("utf-8")
                except UnicodeDecodeError:
                    continue
        return out

    def candidates(self, seed: int = 0) -> list[Mutation]:
        """Every mutation site, in a seeded order that alternates kinds (and files)."""
        by_kind: dict[str, list[Mutation]] = defaultdict(list)
        for path, source in self.library_files().items():
            singles = find_mutations(path, source)
            for mutation in singles:
                by_kind[mutation.kind].append(mutation)
            by_kind[COMBINED] += combined_mutations(path, source, singles,
                                                    seed=f"{self.recipe.requirement}:{seed}")
        rng = random.Random(f"{self.recipe.requirement}:{seed}")
        for mutations in by_kind.values():
            rng.shuffle(mutations)
        order: list[Mutation] = []
        kinds = [k for k in KINDS if by_kind.get(k)]
        if self.curriculum is not None:
            return draw_order(by_kind, self.curriculum.kind_weights(tuple(kinds)), rng)
        while any(by_kind[k] for k in kinds):
            for kind in kinds:
                if by_kind[kind]:
                    order.append(by_kind[kind].pop())
        return order

    def mutation_patch(self, mutation: Mutation) -> str:
        original = self.files[mutation.path]
        mutated = apply_mutation(original.decode("utf-8"), mutation).encode("utf-8")
        return _git_diff({mutation.path: original}, {mutation.path: mutated})

    def screen(self, image: str, stable: set[str], mutations: list[Mutation]) -> list[Candidate | None]:
        """Run the suite under each mutation; a Candidate where stable tests broke cleanly."""
        patches = [self.mutation_patch(m) for m in mutations]
        batches = [list(range(i, min(i + self.batch_size, len(mutations))))
                   for i in range(0, len(mutations), self.batch_size)]
        outputs: dict[int, str] = {}
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for batch, result in zip(batches, pool.map(
                    lambda b: self._run_batch(image, [patches[i] for i in b]), batches)):
                outputs.update(zip(batch, result))
        return [self._judge(mutations[i], stable, outputs[i]) for i in range(len(mutations))]

    @staticmethod
    def _judge(mutation: Mutation, stable: set[str], output: str) -> Candidate | None:
        statuses, dupes = parse_pytest(output) if output else (None, [])
        if statuses is None:
            return None  # did not apply, timed out, or crashed pytest
        if any("::" not in t and s == "ERROR" for t, s in statuses.items()):
            return None  # a module failed to import or collect: a broken package, not a bug
        broken = sorted(t for t in stable if statuses.get(t) in ("FAILED", "ERROR") and t not in dupes)
        if not broken:
            return None
        files = {t.split("::")[0] for t in broken}
        kept = sorted(t for t in stable if t.split("::")[0] in files and statuses.get(t) == "PASSED"
                      and t not in dupes)
        if not kept:
            # the keep rule (SWE-smith's): at least one FAIL_TO_PASS and one PASS_TO_PASS, so a
            # "fix" that breaks the rest of the hidden files cannot count as resolved
            return None
        return Candidate(mutation, broken, kept, output)

    # tasks ------------------------------------------------------------------------------

    def statement_for(self, candidate: Candidate, gold: str, test_patch: str) -> tuple[str, str]:
        """(problem statement, who wrote it: ``model`` or ``plain``). Both kinds pass
        `check_statement`; a model's text that does not is retried once, then replaced."""
        plain = write_statement(self.recipe.name, fail_to_pass=candidate.fail_to_pass,
                                test_patch=test_patch, gold_patch=gold, output=candidate.output)
        if self.statement_model is None or self.statement_calls <= 0:
            return plain, "plain"
        from benchmark.forge.lm import lm_statement

        text, calls = lm_statement(self.statement_model, self.recipe.name,
                                   fail_to_pass=candidate.fail_to_pass, output=candidate.output,
                                   test_patch=test_patch, gold_patch=gold,
                                   max_calls=min(2, self.statement_calls), on_event=self.say)
        self.statement_calls -= calls
        return (text, "model") if text else (plain, "plain")

    def task_for(self, candidate: Candidate, strategy: str = "ast") -> TaskSpec:
        m = candidate.mutation
        name, version = self.recipe.name, self.recipe.version
        original = self.files[m.path]
        mutated = apply_mutation(original.decode("utf-8"), m).encode("utf-8")
        test_files = sorted({t.split("::")[0] for t in candidate.fail_to_pass})
        tests = {p: self.files[p] for p in test_files}
        setup_patch = _git_diff({m.path: original, **tests},
                                {m.path: mutated, **{p: None for p in test_files}})
        gold = _git_diff({m.path: mutated}, {m.path: original})
        test_patch = _git_diff({p: None for p in test_files}, tests)
        statement, written_by = self.statement_for(candidate, gold, test_patch)
        kind = m.kind.replace("_", "-")
        tag = kind if kind.startswith(f"{strategy}-") else f"{strategy}-{kind}"
        instance_id = f"{name}__{name}-{version}__{tag}-{m.key}"
        record = {
            "instance_id": instance_id, "repo": name, "base_commit": "", "version": version,
            "problem_statement": statement,
            "patch": gold, "test_patch": test_patch,
            "FAIL_TO_PASS": candidate.fail_to_pass, "PASS_TO_PASS": candidate.pass_to_pass,
            "environment_setup_commit": "", "hints_text": "", "created_at": "",
            "source": {"kind": "pypi", "requirement": self.recipe.requirement,
                       "setup_patch": setup_patch},
            "environment": self.environment().model_dump(mode="json"),
            "split": split_of(instance_id),
            "forge": {"strategy": strategy, "kind": m.kind, "file": m.path, "line": m.line,
                      "function": m.function, "statement": written_by,
                      "difficulty": estimate_difficulty(gold, candidate.fail_to_pass, m.kind),
                      **({"parts": list(m.parts)} if m.parts else {}),
                      **({"target": {"run": self.curriculum.run,
                                     "generation": self.curriculum.generation,
                                     "kind_weight": round(self.curriculum.kind_weights((m.kind,))[m.kind], 3),
                                     "why": self.curriculum.why()}}
                         if self.curriculum is not None else {})},
        }
        record["forge"]["recipe"] = self.recipe.record()  # how to forge it again
        return TaskSpec.model_validate(record)

    # the whole pipeline -----------------------------------------------------------------

    def run(self, count: int, strategy: str = "ast", *, seed: int = 0,
            max_screened: int | None = None) -> tuple[list[TaskSpec], list[ForgeReport]]:
        """Forge up to `count` validated tasks per strategy (``ast``, ``lm`` or ``all``)."""
        reports = []
        tasks: list[TaskSpec] = []
        for name in (("ast", "lm") if strategy == "all" else (strategy,)):
            found, report = self._run_strategy(name, count, seed=seed, max_screened=max_screened)
            tasks += found
            reports.append(report)
        return tasks, reports

    def _pool(self, strategy: str, count: int, seed: int, limit: int,
              report: ForgeReport) -> list[Mutation]:
        if strategy == "ast":
            return self.candidates(seed)
        from benchmark.forge.lm import lm_mutations, openai_complete

        complete = self.complete
        if complete is None:
            if not os.environ.get("OPENAI_BASE_URL") and not os.environ.get("OPENAI_API_KEY"):
                report.notes.append("the LM strategy needs a model: set OPENAI_BASE_URL and "
                                    "OPENAI_API_KEY (and RATCHET_FORGE_MODEL); nothing tried")
                return []
            complete = openai_complete()
        self.say(f"asking the model for up to {limit} function rewrites")
        pool, calls = lm_mutations(self.recipe.name, self.library_files(), complete,
                                   limit=limit, seed=seed, on_event=self.say)
        report.notes.append(f"{calls} model calls, {len(pool)} usable rewrites")
        return pool

    def _run_strategy(self, strategy: str, count: int, *, seed: int, max_screened: int | None
                      ) -> tuple[list[TaskSpec], ForgeReport]:
        started = time.monotonic()
        report = ForgeReport(self.recipe.requirement, strategy)
        if self.curriculum is not None:
            report.notes.append(f"targeted: {self.curriculum.why()}")
        limit = max_screened if max_screened is not None else (
            max(8 * count, 40) if strategy == "ast" else 2 * count + 4)
        pool = self._pool(strategy, count, seed, limit, report)
        report.sites = len(pool)
        if not pool:
            report.seconds = time.monotonic() - started
            return [], report
        if self._stable is None:
            self._image, self._stable = self.pristine_baseline()
        image = self._image
        stable, flaky = self._stable
        report.stable_tests, report.flaky_excluded = len(stable), flaky
        self.say(f"{self.recipe.requirement}: {len(stable)} tests pass in both baseline runs"
                 f" ({flaky} flaky excluded)")
        kept: list[TaskSpec] = []
        seen_sites: set[tuple[str, int, int]] = set()
        seen_f2p: set[tuple[str, ...]] = set()
        cursor = 0
        waiting: list[TaskSpec] = []  # survivors not yet validated: no more are validated than wanted
        while len(kept) < count and (waiting or cursor < min(len(pool), limit)):
            want = count - len(kept)
            step = min(max(want + 6, 2 * self.batch_size), min(len(pool), limit) - cursor)
            chunk = pool[cursor:cursor + step] if len(waiting) < want else []
            cursor += len(chunk)
            if chunk:
                self.say(f"screening {len(chunk)} mutations ({cursor}/{min(len(pool), limit)})")
            for mutation in chunk:
                report.kinds_tried[mutation.kind] = report.kinds_tried.get(mutation.kind, 0) + 1
            report.screened += len(chunk)
            fresh: list[TaskSpec] = []
            for candidate in self.screen(image, stable, chunk):
                if candidate is None:
                    continue
                report.broke_tests += 1
                f2p = tuple(candidate.fail_to_pass)
                if candidate.mutation.site in seen_sites or f2p in seen_f2p:
                    report.duplicates += 1
                    continue
                seen_sites.add(candidate.mutation.site)
                seen_f2p.add(f2p)
                task = self.task_for(candidate, strategy)
                if len(task.test_patch.encode("utf-8")) > MAX_TEST_PATCH_BYTES:
                    report.too_big += 1
                    continue
                fresh.append(task)
            waiting += fresh
            fresh, waiting = waiting[:want], waiting[want:]
            if not fresh:
                continue
            self.say(f"validating {len(fresh)} tasks (gold and empty patches)")
            verdicts = validate_tasks(self.grader, fresh, workers=self.workers)
            report.validated += len(verdicts)
            by_id = {t.instance_id: t for t in fresh}
            for verdict in verdicts:
                if verdict.valid and len(kept) < count:
                    task = by_id[verdict.instance_id]
                    kept.append(task)
                    kind = task.model_extra["forge"]["kind"]
                    report.kinds_kept[kind] = report.kinds_kept.get(kind, 0) + 1
                elif not verdict.valid:
                    report.invalid.append(f"{verdict.instance_id}: {'; '.join(verdict.reasons)}")
        report.kept = len(kept)
        report.seconds = time.monotonic() - started
        return kept, report


def merge_tasks(path: Path, tasks: list[TaskSpec]) -> int:
    """Write `tasks` into the JSONL file at `path`, replacing same-id lines; returns the
    number of tasks in the file."""
    rows: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows[json.loads(line)["instance_id"]] = line
    for task in tasks:
        rows[task.instance_id] = json.dumps(task.model_dump(mode="json", exclude_none=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in rows.values()), encoding="utf-8")
    return len(rows)
