"""``studies/pretraining-baseline/run.sh`` (issue 19's study) and its ``summarise.py``.

The dry run checks the grid the script would run; the summary is checked against differences and
t-intervals computed by hand; one tiny end-to-end run (synthetic data, 32 px, 2 steps) chains the
real subcommands.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RUN = HERE / "run.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

ARMS = [
    "breast_simclr",
    "multiorgan_simclr",
    "multiorgan_natural_simclr",
    "multiorgan_natural_mim",
    "multiorgan_moco",
    "multiorgan_simsiam",
    "multiorgan_mim",
    "multiorgan_simclr_group",
    "breast_mim",
    "breast_moco",
]
ULTRASOUND = {"busi", "hc18", "pocus", "nerve", "muscle", "lung"}
METHOD_OPTIONS = {
    "simclr": ["--method", "simclr"],
    "natural_simclr": ["--method", "simclr"],
    "natural_mim": ["--method", "mim"],
    "moco": ["--method", "moco"],
    "simsiam": ["--method", "simsiam"],
    "mim": ["--method", "mim"],
    "simclr_group": ["--method", "simclr", "--positives", "group"],
}


def _options(args: list[str]) -> dict[str, list[str]]:
    """Each option's values, in order (flags get an empty string)."""
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        if args[i].startswith("--"):
            has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
            out.setdefault(args[i], []).append(args[i + 1] if has_value else "")
            i += 2 if has_value else 1
        else:
            i += 1
    return out


def _dry_run_calls(work: Path, env: dict[str, str]) -> list[list[str]]:
    """The mosl commands ``run.sh`` prints with DRY_RUN=1 for ``env``, each without its ``mosl``."""
    out = subprocess.run(
        ["bash", str(RUN), "/data", str(work)], env={**env, "DRY_RUN": "1"}, text=True, capture_output=True
    )
    assert out.returncode == 0, out.stderr
    return [shlex.split(line)[1:] for line in out.stdout.splitlines() if line.startswith("mosl ")]


def test_dry_run_prints_the_whole_grid(tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k not in {"SIZE", "SEEDS", "FRACTIONS", "ARMS", "TINY", "EPOCHS_FT"}}
    out = subprocess.run(
        ["bash", str(RUN), "/data", str(work)], env={**env, "DRY_RUN": "1"}, text=True, capture_output=True, check=True
    ).stdout
    assert not work.exists()  # a dry run writes nothing
    calls = [shlex.split(line)[1:] for line in out.splitlines() if line.startswith("mosl ")]
    by_command = Counter(c[0] for c in calls)
    inits = 1 + len(ARMS) + 1  # the baseline, each pre-training, and self_training
    assert by_command == {"prepare": 8, "pretrain": 10, "finetune": inits * 3 * 5, "evaluate": 2 * inits * 3 * 5}
    assert out.splitlines()[-1].endswith(f"summarise.py {work}")

    prepared = {}
    for c in (c for c in calls if c[0] == "prepare"):
        opts = _options(c[1:])
        name = Path(opts["--out"][0]).name
        prepared[name] = c[1]
        assert opts["--size"] == ["256"]
        assert opts.get("--splits") == (None if name == "busi" else ["1,0,0"]), c  # busi: the default split
    assert set(prepared) == ULTRASOUND | {"cifar10", "miniimagenet"}
    assert prepared["lung"] == "/data/lung-videos/covid-blues"

    pretrained = {}
    for c in (c for c in calls if c[0] == "pretrain"):
        opts = _options(c[1:])
        arm = Path(opts["--out"][0]).name
        data = {Path(d).name for d in opts["--data"]}
        if arm.startswith("breast_"):
            assert data == {"busi"}, c  # breast-only arms read BUSI alone
        elif arm.startswith("multiorgan_natural_"):
            assert data == ULTRASOUND | {"cifar10", "miniimagenet"}
        else:
            assert data == ULTRASOUND
        method = arm.split("_", 1)[1]
        method_options = [x for o in ("--method", "--positives") if o in opts for x in (o, opts[o][0])]
        assert method_options == METHOD_OPTIONS[method], c
        # today's defaults otherwise (--encoder and --size: see run.sh)
        assert set(opts) == {"--data", "--encoder", "--size", "--epochs", "--out", "--overwrite", *method_options[::2]}
        assert opts["--encoder"] == ["resnet18"] and opts["--size"] == ["128"] and opts["--epochs"] == ["100"]
        pretrained[arm] = opts["--out"][0]
    assert sorted(pretrained) == sorted(ARMS)

    grid = Counter()
    runs = set()
    for c in (c for c in calls if c[0] == "finetune"):
        opts = _options(c[1:])
        teacher = opts.pop("--teacher", None)
        assert opts.pop("--teacher-keep", None) == (None if teacher is None else ["1"])  # all its masks, as measured
        assert set(opts) == {"--data", "--init", "--size", "--seed", "--label-fraction", "--out", "--overwrite"}, c
        assert Path(opts["--data"][0]).name == "busi" and opts["--size"] == ["128"]
        init, fraction, seed = opts["--init"][0], opts["--label-fraction"][0], opts["--seed"][0]
        arm = "baseline" if init == "none" else Path(init).parent.name
        if teacher is not None:  # self-training from scratch, the baseline of the same fraction and seed teaching
            assert init == "none" and teacher == [f"{work}/ft/baseline/f{fraction}_s{seed}/model.safetensors"]
            arm = Path(opts["--out"][0]).parent.name
        elif arm != "baseline":
            assert init == f"{pretrained[arm]}/model.safetensors"
        grid[(arm, fraction, seed)] += 1
        runs.add(opts["--out"][0])
    expected = {
        (a, f, s) for a in ["baseline", *ARMS, "self_training"] for f in ("0.1", "0.25", "1.0") for s in "01234"
    }
    assert set(grid) == expected and set(grid.values()) == {1}

    evaluated = Counter()
    for c in (c for c in calls if c[0] == "evaluate"):
        opts = _options(c[1:])
        assert "--json" in opts and Path(opts["--data"][0]).name == "busi"
        evaluated[(opts["--model"][0], opts["--split"][0])] += 1
    assert set(evaluated) == {(r, split) for r in runs for split in ("val", "test")}


def test_arms_and_fractions_come_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "DRY_RUN": "1", "ARMS": "breast_mim", "FRACTIONS": "0.5", "SEEDS": "7", "EPOCHS_FT": "3"}
    env.pop("TINY", None)
    calls = _dry_run_calls(tmp_path / "w", env)
    assert [c[0] for c in calls if c[0] == "prepare"] == ["prepare"]  # breast-only: BUSI alone is prepared
    finetunes = [_options(c[1:]) for c in calls if c[0] == "finetune"]
    assert len(finetunes) == 2 and all(o["--epochs"] == ["3"] and o["--seed"] == ["7"] for o in finetunes)
    bad = subprocess.run(
        ["bash", str(RUN), "/data", str(tmp_path / "w")], env={**env, "ARMS": "nope"}, text=True, capture_output=True
    )
    assert bad.returncode != 0 and "unknown arm nope" in bad.stderr


def test_baseline_0_leaves_out_the_baseline_fine_tunes(tmp_path: Path) -> None:
    env = {**os.environ, "DRY_RUN": "1", "ARMS": "breast_mim", "FRACTIONS": "1.0", "SEEDS": "0 1"}
    env.pop("TINY", None)
    inits = {}
    for baseline in ("1", "0"):
        calls = _dry_run_calls(tmp_path / "w", {**env, "BASELINE": baseline})
        inits[baseline] = sorted(_options(c[1:])["--init"][0] for c in calls if c[0] == "finetune")
    pretrained = str(tmp_path / "w/pre/breast_mim/model.safetensors")
    assert inits["1"] == sorted(["none", "none", pretrained, pretrained])
    assert inits["0"] == [pretrained, pretrained]


def test_a_variant_arm_fine_tunes_its_pre_training_with_one_more_option(tmp_path: Path) -> None:
    arms = "breast_moco@enc0.1 breast_moco@freeze10 multiorgan_mim@lr3e-4 multiorgan_mim@encoder breast_moco"
    env = {**os.environ, "DRY_RUN": "1", "ARMS": arms, "FRACTIONS": "0.1", "SEEDS": "0"}
    env.pop("TINY", None)
    calls = _dry_run_calls(tmp_path / "w", env)
    pre = [Path(_options(c[1:])["--out"][0]).name for c in calls if c[0] == "pretrain"]
    assert pre == ["breast_moco", "multiorgan_mim"]  # each pre-training once, shared by its variants
    finetunes = {Path(o["--out"][0]).parent.name: o for o in (_options(c[1:]) for c in calls if c[0] == "finetune")}
    assert set(finetunes) == {"baseline", *arms.split()}
    assert finetunes["breast_moco@enc0.1"]["--encoder-lr-scale"] == ["0.1"]
    assert finetunes["breast_moco@freeze10"]["--freeze-encoder-epochs"] == ["10"]
    assert finetunes["multiorgan_mim@lr3e-4"]["--lr"] == ["3e-4"]
    assert finetunes["multiorgan_mim@encoder"]["--init-part"] == ["encoder"]
    assert "--lr" not in finetunes["breast_moco"] and "--encoder-lr-scale" not in finetunes["breast_moco"]
    for arm, options in finetunes.items():
        if arm != "baseline":
            assert Path(options["--init"][0]).parent.name == arm.split("@")[0]
    bad = subprocess.run(
        ["bash", str(RUN), "/data", str(tmp_path / "w")],
        env={**env, "ARMS": "breast_moco@nope"},
        text=True,
        capture_output=True,
    )
    assert bad.returncode != 0 and "unknown variant in breast_moco@nope" in bad.stderr


def test_a_teacher_variant_learns_from_its_own_arms_fine_tune(tmp_path: Path) -> None:
    arms = "breast_mim@teacher self_training@teacher self_training@keep0.7 self_training@keep0.7@teacher"
    env = {**os.environ, "ARMS": arms, "FRACTIONS": "0.1", "SEEDS": "3"}
    env.pop("TINY", None)
    work = tmp_path / "w"
    finetunes = {
        Path(o["--out"][0]).parent.name: o
        for o in (_options(c[1:]) for c in _dry_run_calls(work, env) if c[0] == "finetune")
    }
    assert set(finetunes) == {"baseline", *arms.split()}
    mim = finetunes["breast_mim@teacher"]  # the pre-trained weights, taught by their own fine-tune's masks
    assert mim["--init"] == [f"{work}/pre/breast_mim/model.safetensors"]
    assert mim["--teacher"] == [f"{work}/ft/breast_mim/f0.1_s3/model.safetensors"]
    second = finetunes["self_training@teacher"]  # a second round: from scratch, the first round's student teaching
    assert second["--init"] == ["none"]
    assert second["--teacher"] == [f"{work}/ft/self_training/f0.1_s3/model.safetensors"]
    confident = finetunes["self_training@keep0.7"]  # the baseline teaching, its surest 70 % of masks only
    assert confident["--teacher"] == [f"{work}/ft/baseline/f0.1_s3/model.safetensors"]
    assert confident["--init"] == ["none"] and confident["--teacher-keep"] == ["0.7"]
    assert "--teacher" not in finetunes["baseline"] and second["--teacher-keep"] == mim["--teacher-keep"] == ["1"]
    filtered_second = finetunes["self_training@keep0.7@teacher"]  # variants chain: the filtered student teaching
    assert filtered_second["--teacher"] == [f"{work}/ft/self_training@keep0.7/f0.1_s3/model.safetensors"]
    assert filtered_second["--init"] == ["none"] and filtered_second["--teacher-keep"] == ["0.7"]


def test_nerve_supervised_starts_from_a_fine_tune_on_the_nerve_masks(tmp_path: Path) -> None:
    arms = "nerve_supervised nerve_supervised@teacher@keep0.7"
    env = {**os.environ, "ARMS": arms, "BASELINE": "0", "FRACTIONS": "0.25", "SEEDS": "2"}
    env.pop("TINY", None)
    work = tmp_path / "w"
    calls = _dry_run_calls(work, env)
    assert not [c for c in calls if c[0] == "pretrain"]
    (prepared,) = [_options(c[1:]) for c in calls if c[0] == "prepare" and "--organ" in c]
    assert prepared["--organ"] == ["nerve"] and prepared["--splits"] == ["1,0,0"]  # every scan (and mask) in train
    source, *finetunes = [_options(c[1:]) for c in calls if c[0] == "finetune"]
    assert source["--data"] == [f"{work}/data/nerve"] and source["--init"] == ["none"]
    assert source["--out"] == [f"{work}/pre/nerve_supervised"] and "--label-fraction" not in source
    by_arm = {Path(o["--out"][0]).parent.name: o for o in finetunes}
    weights = [f"{work}/pre/nerve_supervised/model.safetensors"]
    assert by_arm["nerve_supervised"]["--init"] == weights and "--teacher" not in by_arm["nerve_supervised"]
    student = by_arm["nerve_supervised@teacher@keep0.7"]  # the arm before @teacher teaches, 70 % of its masks kept
    assert student["--init"] == weights and student["--teacher-keep"] == ["0.7"]
    assert student["--teacher"] == [f"{work}/ft/nerve_supervised/f0.25_s2/model.safetensors"]


def test_dense_simclr_pre_trains_the_whole_u_net_with_the_pixel_loss(tmp_path: Path) -> None:
    env = {**os.environ, "ARMS": "multiorgan_simclr_dense", "BASELINE": "0", "FRACTIONS": "0.1", "SEEDS": "0"}
    env.pop("TINY", None)
    work = tmp_path / "w"
    calls = _dry_run_calls(work, env)
    (pre,) = [_options(c[1:]) for c in calls if c[0] == "pretrain"]
    assert pre["--method"] == ["simclr"] and pre["--scope"] == ["encoder-decoder"] and pre["--dense-weight"] == ["1"]
    assert sorted(Path(d).name for d in pre["--data"]) == sorted(ULTRASOUND)
    (ft,) = [_options(c[1:]) for c in calls if c[0] == "finetune"]
    assert ft["--init"] == [f"{work}/pre/multiorgan_simclr_dense/model.safetensors"]


def _the_one_finetune(tmp_path: Path, arm: str) -> dict[str, list[str]]:
    """The options of the one fine-tune a dry run of ``arm`` alone makes (25 %, seed 1), which
    pre-trains nothing."""
    env = {**os.environ, "ARMS": arm, "BASELINE": "0", "FRACTIONS": "0.25", "SEEDS": "1"}
    env.pop("TINY", None)
    calls = [_options(c[1:]) for c in _dry_run_calls(tmp_path / "w", env)]
    assert not [c for c in calls if "--method" in c]  # nothing pre-trained
    (finetune,) = [c for c in calls if "--label-fraction" in c]
    return finetune


def test_a_longer_baseline_trains_from_scratch_with_more_steps_an_epoch(tmp_path: Path) -> None:
    longer = _the_one_finetune(tmp_path, "baseline@steps25")
    assert longer["--steps-per-epoch"] == ["25"] and longer["--init"] == ["none"] and "--teacher" not in longer
    assert Path(longer["--out"][0]).parent.name == "baseline@steps25"


def test_fixmatch_trains_from_scratch_with_consistency_on_the_unlabelled_scans(tmp_path: Path) -> None:
    semi = _the_one_finetune(tmp_path, "baseline@fixmatch")
    assert semi["--semi"] == ["fixmatch"] and semi["--init"] == ["none"] and "--teacher" not in semi


def test_a_student_may_be_larger_and_leave_its_teachers_unsure_pixels_out(tmp_path: Path) -> None:
    larger = _the_one_finetune(tmp_path / "a", "self_training@keep0.7@resnet50")
    assert larger["--encoder"] == ["resnet50"] and larger["--teacher-keep"] == ["0.7"]
    assert Path(larger["--teacher"][0]).parent.parent.name == "baseline"  # the resnet18 baseline teaches
    sure = _the_one_finetune(tmp_path / "b", "self_training@keep0.7@sure0.9")
    assert sure["--teacher-sure"] == ["0.9"] and sure["--teacher-keep"] == ["0.7"] and "--encoder" not in sure
    mixed = _the_one_finetune(tmp_path / "c", "self_training@keep0.7@cutmix0.5")
    assert mixed["--cutmix"] == ["0.5"] and mixed["--teacher-keep"] == ["0.7"]


def test_a_refined_student_fine_tunes_its_student_again_on_the_labels_alone(tmp_path: Path) -> None:
    refined = _the_one_finetune(tmp_path, "self_training@keep0.7@refine@lr3e-4")
    assert refined["--init"] == [f"{tmp_path}/w/ft/self_training@keep0.7/f0.25_s1/model.safetensors"]
    assert refined["--lr"] == ["3e-4"] and "--teacher" not in refined and "--teacher-keep" not in refined
    (tmp_path / "pool").mkdir()
    proc, calls = _pool_run(tmp_path / "pool", ARMS="self_training@refine self_training", FRACTIONS="0.1")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the fake mosl fails an --init used before it exists
    out = {c[c.index("--out") + 1]: c for c in calls if c[1] == "finetune"}
    assert len(out) == 3 * 2  # the baseline, the student and the refined student, 2 seeds
    refined_runs = [c for o, c in out.items() if Path(o).parent.name == "self_training@refine"]
    assert len(refined_runs) == 2 and not [c for c in refined_runs if "--teacher" in c]


def test_pool_starts_a_student_only_after_its_teacher(tmp_path: Path) -> None:
    proc, calls = _pool_run(
        tmp_path, ARMS="self_training@teacher self_training breast_mim@teacher breast_mim", FRACTIONS="0.1"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = {c[c.index("--out") + 1]: c for c in calls if c[1] == "finetune"}
    assert len(out) == 2 * 5  # 2 seeds of the baseline and of four arms, each once
    for c in out.values():
        if "--teacher" in c:  # the fake mosl also fails a student whose teacher has no metrics.json yet
            teacher = str(Path(c[c.index("--teacher") + 1]).parent)
            assert out[teacher][0] < c[0]
    (tmp_path / "again").mkdir()
    proc, _ = _pool_run(tmp_path / "again", ARMS="breast_mim@teacher", BASELINE="0", FRACTIONS="0.1")
    assert proc.returncode != 0 and "its teacher, or the run it refines" in proc.stdout  # skipped, and said


# ------------------------------------------------------------------------------------ summary

BASE = {"0.1": [0.50, 0.52, 0.48], "1.0": [0.70, 0.72, 0.71]}
ARM = {"0.1": [0.55, 0.56, 0.50], "1.0": [0.69, 0.73, 0.71]}
BREAST = {"0.1": [0.51, 0.50, 0.49], "1.0": [0.70, 0.70, 0.70]}
T_975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (from a table)


def _write(work: Path, arm: str, fraction: str, seed: int, test: float, val: float) -> None:
    run = work / "ft" / arm / f"f{fraction}_s{seed}"
    run.mkdir(parents=True)
    (run / "eval_test.json").write_text(json.dumps({"lesion": {"dice": {"mean": test}}, "summary": {}}))
    (run / "eval_val.json").write_text(json.dumps({"lesion": {"dice": {"mean": val}}}))


def _hand(a: list[float], b: list[float]) -> tuple[float, float, float]:
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    half = T_975_2 * sd / math.sqrt(len(d))
    return mean, mean - half, mean + half


def _summarise(work: Path) -> None:
    """summarise.py on WORK, which must succeed."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "summarise.py"), str(work)],
        env={**os.environ, "MPLBACKEND": "Agg"},
        text=True,
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_summary_pairs_seeds_and_gives_t_intervals(tmp_path: Path) -> None:
    work = tmp_path / "work"
    for arm, table in (("baseline", BASE), ("multiorgan_simclr", ARM), ("breast_simclr", BREAST)):
        for f, values in table.items():
            for seed, v in enumerate(values):
                _write(work, arm, f, seed, v, v + 0.1)
    _write(work, "multiorgan_simclr", "0.1", 9, 0.99, 0.99)  # no baseline for seed 9: left out of the pairs
    (work / "pre" / "multiorgan_simclr").mkdir(parents=True)
    cost = {"device": "cuda", "wall_minutes": 12.5, "cpu_minutes": 20.0, "gpu_minutes": 11.0}
    (work / "pre" / "multiorgan_simclr" / "metrics.json").write_text(json.dumps({"cost": cost}))
    _summarise(work)

    rows = list(csv.DictReader((work / "summary.csv").open()))  # cells keep 6 decimals (write_csv)
    get = {(r["comparison"], r["arm"], r["fraction"]): r for r in rows}
    r = get[("vs_baseline", "multiorgan_simclr", "0.1")]
    mean, lo, hi = _hand(ARM["0.1"], BASE["0.1"])  # +0.0367 [−0.0013, +0.0746]
    assert r["n"] == "3" and r["seeds"] == "0 1 2"
    assert float(r["test_diff"]) == pytest.approx(mean, abs=1e-6) and mean == pytest.approx(0.036667, abs=1e-6)
    assert float(r["test_ci_low"]) == pytest.approx(lo, abs=1e-6) and float(r["test_ci_high"]) == pytest.approx(
        hi, abs=1e-6
    )
    assert lo == pytest.approx(-0.001279, abs=1e-6)  # mean gain over +0.03, yet the interval reaches below 0
    assert float(r["test_arm"]) == pytest.approx(sum(ARM["0.1"]) / 3, abs=1e-6)
    assert float(r["val_diff"]) == pytest.approx(mean, abs=1e-6)  # val = test + 0.1 on both sides
    assert float(r["pretrain_wall_min"]) == 12.5 and float(r["pretrain_gpu_min"]) == 11.0

    mo = get[("multiorgan_vs_breast_simclr", "multiorgan_simclr", "1.0")]
    mean, lo, hi = _hand(ARM["1.0"], BREAST["1.0"])
    assert mo["reference"] == "breast_simclr"
    assert float(mo["test_diff"]) == pytest.approx(mean, abs=1e-6) and float(mo["test_ci_low"]) == pytest.approx(
        lo, abs=1e-6
    )
    assert float(get[("baseline", "baseline", "0.1")]["test_arm"]) == pytest.approx(0.5)

    md = (work / "summary.md").read_text()
    assert "+0.037 [-0.001, +0.075]" in md
    assert "multiorgan_simclr: incomplete (needs fractions 0.1, 0.25 and 1.0)" in md
    assert "| multiorgan_simclr | 12.5 | 20.0 | 11.0 |" in md
    if importlib.util.find_spec("matplotlib") is not None:
        assert (work / "gain.png").stat().st_size > 0


def test_overview_lists_every_arm_of_every_results_folder_beside_its_baseline(tmp_path: Path) -> None:
    """``--overview results``: one row per arm and folder, fractions side by side; a superseded folder
    (pilot64) and a repeat of a row already shown (pilot64_b) are left out; every cell is the folder's own
    paired difference."""
    work = tmp_path / "work"
    for arm, table in (("baseline", BASE), ("multiorgan_simclr", ARM)):
        for f, values in table.items():
            for seed, v in enumerate(values):
                _write(work, arm, f, seed, v, v + 0.1)
    _summarise(work)
    results = tmp_path / "results"
    for folder in ("pilot64_a", "pilot64", "pilot64_b"):
        (results / folder).mkdir(parents=True)
        shutil.copy(work / "summary.csv", results / folder / "summary.csv")
    proc = subprocess.run(
        [sys.executable, str(HERE / "summarise.py"), "--overview", str(results)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    md = (results / "overview.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| pilot64")]
    assert len(rows) == 1 and rows[0].startswith("| pilot64_a | multiorgan_simclr | +0.037 [-0.001, +0.075] (3)")
    cells = rows[0].split(" | ")
    assert cells[3] == "–"  # no 25 % fine-tunes
    mean, lo, hi = _hand(ARM["1.0"], BASE["1.0"])
    assert cells[4].startswith(f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] (3)<br>val {mean:+.3f}")


def test_a_variant_arm_is_compared_with_the_baseline_and_with_its_plain_arm(tmp_path: Path) -> None:
    work = tmp_path / "work"
    variant = [v + 0.02 for v in ARM["0.1"]]
    chained = [v + 0.01 for v in variant]
    for arm, values in (
        ("baseline", BASE["0.1"]),
        ("breast_moco", ARM["0.1"]),
        ("breast_moco@enc0.1", variant),
        ("breast_moco@enc0.1@teacher", chained),
    ):
        for seed, v in enumerate(values):
            _write(work, arm, "0.1", seed, v, v)
    (work / "pre" / "breast_moco").mkdir(parents=True)
    (work / "pre" / "breast_moco" / "metrics.json").write_text(json.dumps({"cost": {"cpu_minutes": 7.0}}))
    _summarise(work)
    get = {(r["comparison"], r["arm"]): r for r in csv.DictReader((work / "summary.csv").open())}
    vs_base = get[("vs_baseline", "breast_moco@enc0.1")]
    assert float(vs_base["test_diff"]) == pytest.approx(_hand(variant, BASE["0.1"])[0], abs=1e-6)
    assert float(vs_base["pretrain_cpu_min"]) == 7.0  # the cost of the weights it fine-tunes
    vs_plain = get[("fine-tuning option", "breast_moco@enc0.1")]
    assert vs_plain["reference"] == "breast_moco" and float(vs_plain["test_diff"]) == pytest.approx(0.02, abs=1e-6)
    # a chained variant is compared with its arm less the last variant
    vs_first = get[("fine-tuning option", "breast_moco@enc0.1@teacher")]
    assert vs_first["reference"] == "breast_moco@enc0.1"
    assert float(vs_first["test_diff"]) == pytest.approx(0.01, abs=1e-6)
    assert "fine-tuning option:" in (work / "summary.md").read_text()


def test_the_filtered_student_is_compared_with_a_baseline_trained_as_long(tmp_path: Path) -> None:
    work = tmp_path / "work"
    longer = [v + 0.01 for v in BASE["0.1"]]
    student = [v + 0.04 for v in BASE["0.1"]]
    fixmatch = [v + 0.03 for v in BASE["0.1"]]
    arms = (
        ("baseline", BASE["0.1"]),
        ("baseline@steps25", longer),
        ("self_training@keep0.7", student),
        ("baseline@fixmatch", fixmatch),
    )
    for arm, values in arms:
        for seed, v in enumerate(values):
            _write(work, arm, "0.1", seed, v, v)
    _summarise(work)
    got = [r for r in csv.DictReader((work / "summary.csv").open()) if r["arm"] != "baseline"]
    by = {(r["comparison"], r["arm"], r["reference"]): float(r["test_diff"]) for r in got}
    assert by == pytest.approx(
        {
            ("vs_baseline", "baseline@steps25", "baseline"): 0.01,  # once: not again as a fine-tuning option
            ("vs_baseline", "self_training@keep0.7", "baseline"): 0.04,
            ("vs_baseline", "baseline@fixmatch", "baseline"): 0.03,
            ("self-training against a baseline as long", "self_training@keep0.7", "baseline@steps25"): 0.03,
        },
        abs=1e-6,
    )
    summary = (work / "summary.md").read_text()
    assert "- self_training@keep0.7:" in summary and "- baseline@steps25:" not in summary  # a control, not judged
    assert "- baseline@fixmatch:" in summary  # a method of its own, judged


def test_half_the_labels_are_paired_with_the_baseline_at_all_of_them(tmp_path: Path) -> None:
    work = tmp_path / "work"
    half_base, half_arm = [0.66, 0.70, 0.69], [0.68, 0.71, 0.73]
    for arm, f, values in (
        ("baseline", "1.0", BASE["1.0"]),
        ("baseline", "0.5", half_base),
        ("breast_mim", "0.5", half_arm),
    ):
        for seed, v in enumerate(values):
            _write(work, arm, f, seed, v, v + 0.1)
    _summarise(work)
    get = {(r["comparison"], r["arm"]): r for r in csv.DictReader((work / "summary.csv").open())}
    for arm, values in (("baseline", half_base), ("breast_mim", half_arm)):
        r = get[("half the labels", arm)]
        mean, lo, hi = _hand(values, BASE["1.0"])
        assert r["fraction"] == "0.5" and r["reference"] == "baseline" and r["n"] == "3"
        assert float(r["test_ref"]) == pytest.approx(0.71, abs=1e-6)  # the baseline at 100 %, not at 50 %
        assert float(r["test_diff"]) == pytest.approx(mean, abs=1e-6)
        assert float(r["test_ci_low"]) == pytest.approx(lo, abs=1e-6)
    assert get[("half the labels", "breast_mim")]["test_diff"] != get[("vs_baseline", "breast_mim")]["test_diff"]
    assert "## Half the labels against the baseline with all of them" in (work / "summary.md").read_text()


def _summarise_module():
    """summarise.py, imported from its file (the study folder is not a package)."""
    spec = importlib.util.spec_from_file_location("summarise", HERE / "summarise.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_csv_keeps_each_fine_tune_and_pairs_a_new_arm_with_an_earlier_baseline(tmp_path: Path) -> None:
    earlier, work = tmp_path / "earlier", tmp_path / "work"
    for seed, v in enumerate(BASE["0.1"]):
        _write(earlier, "baseline", "0.1", seed, v, v + 0.1)
    for seed, v in enumerate(ARM["0.1"]):
        _write(work, "multiorgan_simclr", "0.1", seed, v, v + 0.1)
    _write(work, "baseline", "0.1", 0, 0.2, 0.3)  # WORK's own run wins over the earlier file's seed 0
    env = {**os.environ, "MPLBACKEND": "Agg"}
    summarise = [sys.executable, str(HERE / "summarise.py")]
    assert subprocess.run([*summarise, str(earlier)], env=env, capture_output=True).returncode == 0
    runs = list(csv.DictReader((earlier / "runs.csv").open()))
    assert [(r["arm"], r["fraction"], r["seed"]) for r in runs] == [("baseline", "0.1", str(s)) for s in range(3)]
    assert float(runs[1]["test"]) == BASE["0.1"][1] and float(runs[1]["val"]) == pytest.approx(BASE["0.1"][1] + 0.1)

    proc = subprocess.run(
        [*summarise, str(work), "--runs", str(earlier / "runs.csv")], env=env, text=True, capture_output=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 fine-tunes added" in proc.stdout
    r = {(r["comparison"], r["arm"]): r for r in csv.DictReader((work / "summary.csv").open())}
    row = r[("vs_baseline", "multiorgan_simclr")]
    assert row["n"] == "3" and float(row["test_ref"]) == pytest.approx(
        (0.2 + BASE["0.1"][1] + BASE["0.1"][2]) / 3, abs=1e-6
    )
    assert len(list(csv.DictReader((work / "runs.csv").open()))) == 4  # WORK's own runs only
    missing = subprocess.run([*summarise, str(work), "--runs", str(tmp_path / "nope.csv")], capture_output=True)
    assert missing.returncode == 2 and b"no such runs.csv" in missing.stderr


def test_verdict_applies_the_issue_bar() -> None:
    summarise = _summarise_module()

    def row(f: str, diff: float, low: float) -> dict:
        return {"fraction": f, "n": 5, "test_diff": diff, "test_ci_low": low}

    good = [row("0.1", 0.04, 0.01), row("0.25", 0.031, 0.001), row("1.0", -0.004, -0.02)]
    assert summarise.verdict(good) == "meets the bar"
    assert summarise.verdict([*good[:2], row("1.0", -0.006, -0.02)]) == "misses the bar at 100 % (loss)"
    assert summarise.verdict([row("0.1", 0.05, -0.001), *good[1:]]) == "misses the bar at 10 %"


def test_pretrain_cost_of_a_supervised_pre_training_is_its_fine_tunes_wall_time(tmp_path: Path) -> None:
    summarise = _summarise_module()
    (tmp_path / "pre" / "nerve_supervised").mkdir(parents=True)
    (tmp_path / "pre" / "nerve_supervised" / "metrics.json").write_text(json.dumps({"seconds": 270.0}))
    assert summarise.pretrain_cost(tmp_path, "nerve_supervised@teacher") == {"wall_minutes": 4.5}
    (tmp_path / "pre" / "breast_mim").mkdir()
    cost = {"wall_minutes": 3.0, "cpu_minutes": 6.0, "gpu_minutes": 0.0}
    (tmp_path / "pre" / "breast_mim" / "metrics.json").write_text(json.dumps({"cost": cost, "seconds": 1.0}))
    assert summarise.pretrain_cost(tmp_path, "breast_mim") == cost
    assert summarise.pretrain_cost(tmp_path, "multiorgan_mim") == {}


def test_figure_rows_keep_every_arm() -> None:
    summarise = _summarise_module()

    assert summarise.panel_rows(["multiorgan_moco", "breast_moco"]) == [["multiorgan_moco", "breast_moco"]]
    rows = summarise.panel_rows(ARMS)  # 10 arms: more than a panel holds
    assert rows == [[a for a in ARMS if a.startswith("breast_")], [a for a in ARMS if not a.startswith("breast_")]]
    assert all(len(r) <= summarise.MAX_SERIES for r in rows)


def test_figure_has_one_legend_above_the_panels(monkeypatch, tmp_path: Path) -> None:
    """A legend inside a panel can hide a whisker: the figure carries one legend, naming each bar."""
    pytest.importorskip("matplotlib")
    summarise = _summarise_module()
    figures = []
    monkeypatch.setattr(summarise, "save_png", lambda fig, path, dpi: figures.append(fig))
    table = [
        {"comparison": "vs_baseline", "n": 5, "arm": arm, "fraction": f, "test_diff": d, "test_ci_low": d - 0.1}
        | {"test_ci_high": d + 0.1}
        for arm, d in [("breast_moco", -0.05), ("multiorgan_moco", 0.01)]
        for f in ["0.1", "0.25", "1.0"]
    ]
    assert summarise.figure(table, tmp_path / "gain.png")
    (fig,) = figures
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert sorted(labels) == ["issue 19 bar: +0.030 at 10 % and 25 %, -0.005 at 100 %", "test Δ, 95 % CI"]


def test_figure_draws_the_contrasts_below_and_redraws_from_a_summary_csv(monkeypatch, tmp_path: Path) -> None:
    """Multi-organ against breast-only gets its own row of panels; ``--redraw`` draws the same figure
    from the ``summary.csv`` a results folder keeps."""
    pytest.importorskip("matplotlib")
    summarise = _summarise_module()
    work = tmp_path / "work"
    for arm, table in (("baseline", BASE), ("multiorgan_simclr", ARM), ("breast_simclr", BREAST)):
        for f, values in table.items():
            for seed, v in enumerate(values):
                _write(work, arm, f, seed, v, v + 0.1)
    table = summarise.rows(work, summarise.read_scores(work))
    summarise.write_csv(work / "summary.csv", summarise.COLUMNS, table)
    figures = []
    monkeypatch.setattr(summarise, "save_png", lambda fig, path, dpi: figures.append(fig))
    assert summarise.figure(table, work / "gain.png")
    monkeypatch.setattr(sys, "argv", ["summarise.py", "--redraw", str(work)])
    summarise.main()
    drawn, redrawn = (
        [(ax.get_title(), [t.get_text() for t in ax.get_xticklabels()]) for ax in f.axes] for f in figures
    )
    assert drawn == redrawn
    assert drawn == [
        ("10 % labels (n = 3 seeds)", ["breast_simclr", "multiorgan_simclr"]),
        ("100 % labels (n = 3 seeds)", ["breast_simclr", "multiorgan_simclr"]),
        ("contrasts, 10 % labels (n = 3 seeds)", ["multiorgan_simclr\n− breast_simclr"]),
        ("contrasts, 100 % labels (n = 3 seeds)", ["multiorgan_simclr\n− breast_simclr"]),
    ]
    contrast = figures[1].axes[2].lines[0].get_ydata()  # the marker: the paired difference, 6 decimals
    assert contrast[0] == pytest.approx(_hand(ARM["0.1"], BREAST["0.1"])[0], abs=1e-6)


# ------------------------------------------------- the job pool, with a stand-in mosl (seconds)

FAKE_MOSL = r"""
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
command, out = args[0], Path(args[args.index("--out") + 1])
with open(os.environ["CALLS"], "a") as log:
    log.write(json.dumps([time.time(), *args]) + "\n")
with open(os.environ["CALLS"] + ".threads", "a") as log:
    log.write(f"{command} {os.environ.get('OMP_NUM_THREADS')}\n")
if command == "prepare":
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text("{}")
elif command == "pretrain":
    time.sleep(0.5)
    if out.name in os.environ.get("FAIL", "").split():
        sys.exit("pre-training failed")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.safetensors").write_text("")
    (out / "metrics.json").write_text(json.dumps({"cost": {"wall_minutes": 1.0}}))
elif command == "finetune":
    init = args[args.index("--init") + 1]
    if init != "none" and not (Path(init).parent / "metrics.json").is_file():
        sys.exit(f"{init} used before its pre-training finished")
    if "--teacher" in args and not (Path(args[args.index("--teacher") + 1]).parent / "metrics.json").is_file():
        sys.exit("teacher used before its fine-tune finished")
    time.sleep(0.1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text("{}")
else:  # evaluate --json
    seed = int(Path(args[args.index("--model") + 1]).name.rsplit("_s", 1)[1])
    print(json.dumps({"lesion": {"dice": {"mean": 0.5 + seed / 100}}}))
"""


def _pool_run(tmp_path: Path, **settings: str) -> tuple[subprocess.CompletedProcess[str], list[list]]:
    fake = tmp_path / "fake_mosl.py"
    fake.write_text(FAKE_MOSL)
    calls = tmp_path / "calls.jsonl"
    env = {
        **os.environ,
        "MOSL": f"{sys.executable} {fake}",
        "PYTHON": sys.executable,
        "CALLS": str(calls),
        "ARMS": "breast_simclr multiorgan_mim",
        "SEEDS": "0 1",
        "FRACTIONS": "0.1 1.0",
        "PARALLEL": "3",
        "POLL": "0.05",
        "MPLBACKEND": "Agg",
        **settings,
    }
    env.pop("TINY", None)
    proc = subprocess.run(["bash", str(RUN), "/data", str(tmp_path / "work")], env=env, text=True, capture_output=True)
    return proc, [json.loads(line) for line in calls.read_text().splitlines()]


def test_pool_waits_for_weights_resumes_killed_runs_and_skips_finished_ones(tmp_path: Path) -> None:
    work = tmp_path / "work"
    killed = work / "ft" / "baseline" / "f0.1_s1"  # a fine-tune killed after its first checkpoint
    killed.mkdir(parents=True)
    (killed / "checkpoint.safetensors").write_text("")
    proc, calls = _pool_run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    finetunes = [c for c in calls if c[1] == "finetune"]
    assert len(finetunes) == 3 * 2 * 2 and sum(c[1] == "evaluate" for c in calls) == 2 * len(finetunes)
    assert sum(c[1] == "pretrain" for c in calls) == 2
    for c in finetunes:
        init = c[c.index("--init") + 1]
        assert init == "none" or (Path(init).parent / "metrics.json").stat().st_mtime <= c[0]  # after its weights
        assert c[-1] == ("--resume" if c[c.index("--out") + 1] == str(killed) else "--overwrite")
    assert "| multiorgan_mim |" in (work / "summary.md").read_text()

    again, calls_again = _pool_run(tmp_path)
    assert again.returncode == 0
    assert [c[1] for c in calls_again[len(calls) :]] == []  # everything was done: nothing ran again


def test_pretrain_threads_set_the_threads_of_pre_trainings_only(tmp_path: Path) -> None:
    proc, _ = _pool_run(tmp_path, OMP_NUM_THREADS="1", PRETRAIN_THREADS="2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    threads = Counter((tmp_path / "calls.jsonl.threads").read_text().splitlines())
    assert threads == {"prepare 1": 6, "pretrain 2": 2, "finetune 1": 12, "evaluate 1": 24}


def test_a_failed_pretraining_skips_its_fine_tunes_and_fails_the_run(tmp_path: Path) -> None:
    proc, calls = _pool_run(tmp_path, FAIL="breast_simclr")
    assert proc.returncode == 1
    assert "no weights for breast_simclr" in proc.stdout
    inits = Counter(Path(c[c.index("--init") + 1]).parent.name for c in calls if c[1] == "finetune")
    assert inits == {"": 4, "multiorgan_mim": 4}  # baseline (init none) and the arm whose weights exist
    assert (tmp_path / "work" / "summary.md").is_file()  # the summary of what finished is still written


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_tiny_end_to_end_then_a_rerun_skips_everything(tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = {
        **os.environ,
        "TINY": "1",
        "ARMS": "breast_simclr multiorgan_simclr",
        "FRACTIONS": "1.0",  # TINY's "0.5 1.0" doubles the 4-s process starts: over a minute on one thread
        "MOSL": f"{sys.executable} -m mosl_cli",
        "PYTHON": sys.executable,
        "MPLBACKEND": "Agg",
        "POLL": "0.2",
    }
    proc = subprocess.run(["bash", str(RUN), "unused", str(work)], env=env, text=True, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for arm in ("baseline", "breast_simclr", "multiorgan_simclr"):
        for f in ("1.0",):
            run = work / "ft" / arm / f"f{f}_s0"
            for split in ("val", "test"):
                assert 0 <= json.loads((run / f"eval_{split}.json").read_text())["lesion"]["dice"]["mean"] <= 1
            config = json.loads((run / "config.json").read_text())["config"]
            assert config["init"] == ("none" if arm == "baseline" else str(work / "pre" / arm / "model.safetensors"))
    pre = json.loads((work / "pre" / "multiorgan_simclr" / "config.json").read_text())["config"]
    assert len(pre["data"]) == 6 and pre["encoder"] == "resnet18" and pre["size"] == 32
    assert "cost" in json.loads((work / "pre" / "breast_simclr" / "metrics.json").read_text())
    rows = list(csv.DictReader((work / "summary.csv").open()))
    assert {(r["comparison"], r["arm"], r["fraction"]) for r in rows} == {
        ("baseline", "baseline", "1.0"),
        ("vs_baseline", "breast_simclr", "1.0"),
        ("vs_baseline", "multiorgan_simclr", "1.0"),
        ("multiorgan_vs_breast_simclr", "multiorgan_simclr", "1.0"),
    }
    outputs = sorted(p for p in (work / "ft").rglob("*") if p.is_file()) + sorted((work / "pre").rglob("*"))
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    again = subprocess.run(
        ["bash", str(RUN), "unused", str(work)], env=env, text=True, capture_output=True, timeout=120
    )
    assert again.returncode == 0 and "== " not in again.stderr  # nothing ran twice
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps
