"""Fault injection: would the test suite notice a wrong study?

Each fault below is a realistic one-line mistake in the science or in the code that assembles a
run (rewinding, masks, label noise, metrics, the true p(y|x), the best pruned model, weight
counts, resuming). The script copies the repository (its tracked and untracked, not ignored,
files) to a temporary folder, applies one fault at a time, runs pytest there until the first
failure and prints whether the fault was killed, and by which test, or survived; then the score.
It is not part of the suite (a full pass runs the suite once per fault).

    python tools/fault_injection.py --list
    python tools/fault_injection.py                               # each fault's own tests first,
                                                                  # then the rest of the suite
    python tools/fault_injection.py --own                         # each fault's own tests only
    python tools/fault_injection.py --only=no_rewind,noisy_metrics_on_clean_labels
    python tools/fault_injection.py \
        --tests=tests/run/test_invariants.py,tests/run/test_rows_recomputed.py

``--tests`` runs only the given test files for every fault; ``--first`` runs them before each
fault's own and the rest of the suite; ``--own`` stops after each fault's own tests. The
unmodified copy is tested first with the same tests (``--no-baseline`` skips it): a test
failing without any fault would "kill" every fault.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Fault:
    """One mistake: ``original`` (exact text, found once in ``file``) becomes ``replacement``.

    ``tests`` are the test files most likely to notice it, run first to keep a pass quick.
    """

    name: str
    file: str
    original: str
    replacement: str
    description: str
    tests: tuple[str, ...] = ()


INVARIANTS = "tests/run/test_invariants.py"
ROWS = "tests/run/test_rows_recomputed.py"

FAULTS = (
    Fault("no_rewind", "imp_jax/run/driver.py",
          "point = rewind()",
          "point = rewind().replace(params=previous.params)",
          "levels >= 1 start from the previous level's trained weights, not the rewind point",
          (INVARIANTS, "tests/run/test_driver.py")),
    Fault("noisy_metrics_on_clean_labels", "imp_jax/run/evaluation.py",
          'for prefix, labels in (("test_", y_test), ("test_noisy_", y_test_noisy)):',
          'for prefix, labels in (("test_", y_test), ("test_noisy_", y_test)):',
          "the test_noisy_* metrics (noisy-label ECE, NLL, ...) are taken on the clean labels",
          (ROWS,)),
    Fault("noisy_p_true", "imp_jax/run/experiment.py",
          "arrays = (x, y, task.true_probs(c.mixture_nu, x),",
          "arrays = (x, y, task.true_probs(c.mixture_nu, x, c.label_noise),",
          "the clean p(y|x) of the fresh sample is computed with the label noise", (ROWS,)),
    Fault("rewind_keeps_momentum", "imp_jax/run/driver.py",
          "return jax.block_until_ready(_rewinder(exp.trainer)(point, masks))",
          "return jax.block_until_ready(point.replace(params=masks_lib.apply_mask(point.params, "
          "masks), masks=masks))",
          "a rewind keeps the rewind point's momentum instead of a fresh optimizer state",
          (INVARIANTS,)),
    Fault("rewind_leaves_pruned_weights", "imp_jax/core/train.py",
          "params = masks_lib.apply_mask(point.params, masks)",
          "params = point.params",
          "a rewind restores the pruned weights' initial values instead of zeros",
          (INVARIANTS, "tests/core/test_train.py")),
    Fault("rewind_step_off_by_one", "imp_jax/run/config.py",
          'return n * steps_per_epoch if unit == "ep" else n',
          'return n * steps_per_epoch if unit == "ep" else n + 1',
          "imp.rewind='Kit' rewinds to step K+1", (INVARIANTS, "tests/run/test_config.py")),
    Fault("resume_from_another_levels_progress", "imp_jax/run/checkpoints.py",
          'if meta["level"] != level:',
          'if meta["level"] > level:',
          "a level starts from the previous level's last in-level checkpoint",
          (INVARIANTS, "tests/run/test_driver.py")),
    Fault("pruning_per_layer", "imp_jax/masks.py",
          "return [[i] for i in idx] if layerwise else [idx]",
          "return [[i] for i in idx]",
          "global magnitude pruning ranks each layer on its own",
          (INVARIANTS, "tests/masks/test_masks.py")),
    Fault("pruning_signed_weights", "imp_jax/masks.py",
          "lambda w: jax.lax.bitcast_convert_type(jnp.abs(w).astype(jnp.float32), jnp.int32)",
          "lambda w: jax.lax.bitcast_convert_type(w.astype(jnp.float32), jnp.int32)",
          "magnitude pruning ranks w instead of |w|", (INVARIANTS, "tests/masks/test_masks.py")),
    Fault("pruned_count_rounds_down", "imp_jax/masks.py",
          "return whole * p + (rest * p + q - 1) // q",
          "return whole * p + (rest * p) // q",
          "a level removes floor(0.2 R) weights instead of ceil",
          (INVARIANTS, "tests/masks/test_masks.py")),
    Fault("openlth_count_ignores_excluded", "imp_jax/masks.py",
          'base = prunable if count == "exact" or layerwise else sum(',
          'base = prunable if count == "exact" or layerwise else 0 * sum(',
          "the reference count leaves out the excluded layers' weights (R = prunable only)",
          (INVARIANTS, "tests/masks/test_masks.py")),
    Fault("random_control_by_magnitude", "imp_jax/core/pruning.py",
          '"random_global": Method(masks.prune_random_global, random=True',
          '"random_global": Method(masks.prune_global, random=False',
          "the random-pruning control prunes by magnitude", (INVARIANTS,)),
    Fault("reinit_reuses_the_tickets_init", "imp_jax/run/driver.py",
          "point = exp.initial_state(jax.vmap(lambda k: jax.random.fold_in(k, level))(keys))",
          "point = exp.initial_state(keys)",
          "the reinit control starts from the ticket's own initialisation", (INVARIANTS,)),
    Fault("train_on_clean_labels", "imp_jax/run/experiment.py",
          "y_train = np.broadcast_to(dataset.y_train, (c.replicates, dataset.n_train))",
          "y_train = np.broadcast_to(dataset.y_train_clean, (c.replicates, dataset.n_train))",
          "training sees the clean labels: no label noise", (ROWS,)),
    Fault("test_labels_not_noised", "imp_jax/data/datasets.py",
          'noisy_test, _ = add_label_noise(stream(key, "test_noise"), y_test, label_noise, '
          "num_classes)",
          'noisy_test, _ = add_label_noise(stream(key, "test_noise"), y_test, 0.0, num_classes)',
          "the noisy test labels are the clean ones", (ROWS, "tests/data/test_data.py")),
    Fault("true_label_acc_on_noisy_labels", "imp_jax/run/evaluation.py",
          "jnp.sum((jnp.argmax(logits_train, -1) == y_clean) & corrupted)",
          "jnp.sum((jnp.argmax(logits_train, -1) == y_train) & corrupted)",
          "the relabelled subset's true-label accuracy is taken on its noisy labels", (ROWS,)),
    Fault("clean_subset_is_the_noisy_one", "imp_jax/run/evaluation.py",
          "clean = ~corrupted",
          "clean = corrupted",
          "the clean-subset train error is taken on the relabelled examples", (ROWS,)),
    Fault("kl_reversed", "imp_jax/run/evaluation.py",
          '"true_kl": metrics_lib.kl_true_model(p_true, probs),',
          '"true_kl": metrics_lib.kl_true_model(probs, p_true),',
          "KL(p || p*) reported as KL(p* || p)", (ROWS,)),
    Fault("ece_over_bins", "imp_jax/core/metrics.py",
          "return jnp.sum(jnp.abs(sum_correct - sum_conf)) / confidence.shape[0]",
          "return jnp.mean(jnp.abs(sum_correct - sum_conf) / jnp.maximum(sum_conf, 1))",
          "ECE as an unweighted mean over bins", ("tests/core/test_metrics.py", ROWS)),
    Fault("p_true_without_norms", "imp_jax/data/mixtures.py",
          'log_density = jnp.einsum("nd,ckd->nck", x, means) - 0.5 * jnp.sum(means**2, axis=-1)',
          'log_density = jnp.einsum("nd,ckd->nck", x, means)',
          "p(y|x) of the mixtures leaves out the means' norms",
          ("tests/data/test_mixtures.py", ROWS)),
    Fault("weights_counted_without_excluded", "imp_jax/run/evaluation.py",
          "kernels = masks_lib.count(mask, masks_lib.PrunableSpec(min_ndim=exp.spec.min_ndim))",
          "kernels = masks_lib.count(mask, exp.spec)",
          "remaining weights leave out the excluded (output) layer", (INVARIANTS, ROWS)),
    Fault("dense_can_be_best_pruned", "imp_jax/core/analysis.py",
          "return SparseMinimum(best=candidate if rises and drops else None, candidate=candidate,",
          "return SparseMinimum(best=candidate if rises else None, candidate=candidate,",
          "a path on which pruning only hurt names the dense network its best pruned model",
          ("tests/core/test_analysis.py",)),
    Fault("effective_parameters_prunable_only", "imp_jax/core/analysis.py",
          '"effective_parameters": best_model.get("remaining_weights"),',
          '"effective_parameters": best_model.get("prunable_remaining"),',
          "the effective number of parameters leaves out the unpruned output layer",
          ("tests/core/test_analysis.py",)),
)


def _copy_repository(dest: Path) -> None:
    """The repository's tracked and untracked (not ignored) files, and a link to the data
    beside it (``../shared``), which the tests look for."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (dest.parent / "shared").symlink_to(shared)


def _environment(repo: Path, cache: Path) -> dict[str, str]:
    """The copy first on the import path (ahead of an editable install of the original); one
    XLA compilation cache for every pass."""
    return {**os.environ, "PYTHONPATH": str(repo), "JAX_PLATFORMS": "cpu",
            "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _pytest(repo: Path, env: dict[str, str], targets: list[str], ignore: list[str],
            extra: list[str], timeout: float) -> tuple[bool, str]:
    """Runs pytest in ``repo`` until the first failure: (passed, the first failing test or
    why the run failed)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider",
           *extra, *targets, *(f"--ignore={p}" for p in ignore)]
    try:
        out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s"
    if out.returncode == 0:
        return True, ""
    if out.returncode == 5:  # no tests collected: nothing noticed anything
        return True, ""
    for line in out.stdout.splitlines():
        if match := re.match(r"^(FAILED|ERROR) (\S+)", line):
            return False, match.group(2)
    tail = (out.stdout + out.stderr).strip().splitlines()
    return False, f"pytest exit {out.returncode}: {tail[-1] if tail else ''}"


def _passes(fault_tests: tuple[str, ...], args: argparse.Namespace
            ) -> list[tuple[list[str], list[str]]]:
    """The pytest passes for a fault whose own tests are ``fault_tests``: (targets, ignored)
    each."""
    if args.tests:
        return [(args.tests, [])]
    first = [*args.first, *(t for t in fault_tests if t not in args.first)]
    passes = [(first, [])] if first else []
    return passes if args.own and passes else [*passes, (["tests"], first)]


def _run(repo: Path, env: dict[str, str], passes: list[tuple[list[str], list[str]]],
         args: argparse.Namespace) -> tuple[bool, str]:
    for targets, ignore in passes:
        passed, why = _pytest(repo, env, targets, ignore, shlex.split(args.pytest_args),
                              args.timeout)
        if not passed:
            return False, why
    return True, ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    parser.add_argument("--only", default="", help="comma-separated fault names to apply")
    parser.add_argument("--tests", default="", help="comma-separated test files: run only these")
    parser.add_argument("--first", default="", help="comma-separated test files to run first")
    parser.add_argument("--own", action="store_true",
                        help="run only each fault's own tests (and --first), not the rest")
    parser.add_argument("--pytest-args", default="-n 0", help="extra pytest arguments")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per pytest pass")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip testing the unmodified copy first")
    args = parser.parse_args()
    args.tests = [t for t in args.tests.split(",") if t]
    args.first = [t for t in args.first.split(",") if t]
    faults = FAULTS
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {f.name for f in FAULTS}
        if unknown:
            parser.error(f"unknown faults: {sorted(unknown)}")
        faults = tuple(f for f in FAULTS if f.name in wanted)
    if args.list:
        for f in faults:
            print(f"{f.name:40s} {f.file:24s} {f.description}")
        return 0

    # A SIGTERM unwinds like Ctrl-C: the running pytest is killed, the copy removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="fault_injection_") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        _copy_repository(repo)
        env = _environment(repo, Path(tmp) / "xla_cache")
        where = subprocess.run([sys.executable, "-c", "import imp_jax; print(imp_jax.__file__)"],
                               cwd=repo, env=env, capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(repo)):
            print(f"error: the copy imports imp_jax from {where!r}, not from {repo}")
            return 2
        if not args.no_baseline:
            # Every test file a chosen fault would run, once.
            own = tuple(dict.fromkeys(t for f in faults for t in f.tests))
            passed, why = _run(repo, env, _passes(own, args), args)
            if not passed:
                print(f"error: the tests fail without any fault ({why}); fix that first")
                return 2
        killed, problems = 0, 0
        for i, fault in enumerate(faults, 1):
            path = repo / fault.file
            text = path.read_text()
            if text.count(fault.original) != 1:
                print(f"[{i}/{len(faults)}] {fault.name}: STALE (its original text occurs "
                      f"{text.count(fault.original)} times in {fault.file})", flush=True)
                problems += 1
                continue
            path.write_text(text.replace(fault.original, fault.replacement))
            start = time.monotonic()
            try:
                passed, why = _run(repo, env, _passes(fault.tests, args), args)
            finally:
                path.write_text(text)
            seconds = time.monotonic() - start
            killed += not passed
            verdict = f"killed by {why}" if not passed else "SURVIVED"
            print(f"[{i}/{len(faults)}] {fault.name}: {verdict} ({seconds:.0f} s)\n"
                  f"    {fault.file}: {fault.description}", flush=True)
        print(f"score: {killed} of {len(faults)} faults killed"
              + (f", {problems} stale" if problems else ""))
        return 0 if killed == len(faults) else 1


if __name__ == "__main__":
    sys.exit(main())
