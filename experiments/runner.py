"""One evaluation from request to results folder: `run_evaluation(EvaluationRequest(...))`.

`prepare` checks the whole request before anything runs (figure, policies and their arguments,
checkpoints, env factory, the base env config and every variant's) and returns the plan;
`execute` plays the grid (experiments.grid), writes the tables (experiments.report) and the
figure (experiments.plots). Fig. 15 reads training logs instead (experiments.curves).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from agents.baselines import StepRanges
from agents.config import load_run_config
from agents.evaluation import METRICS, check_env_factory
from experiments import curves as fig15
from experiments.figures import Figure, Variant, get_figure
from experiments.grid import (ExperimentError, PolicySpec, baseline_policies, check_grid, checkpoint_policies,
                              run_grid)
from experiments.plots import curves_figure, figure_for, save_png
from experiments.report import Report, write_curves_report, write_grid_report
from his_env.config import HISConfig

DEFAULT_EPISODES = 5
DEFAULT_SEED_BASE = 20_000


@dataclass
class EvaluationRequest:
    """What to evaluate. `checkpoints` are `[VARIANT=]PATH` items, `baselines` names such as
    `search` or `fixed:8,4`, `overrides` dotted env keys applied on top of the base config
    (configs/default.yaml overlaid by `config`, else the first checkpoint's env)."""

    figure: Optional[int] = None
    checkpoints: Sequence[str] = ()
    baselines: Sequence[str] = ()
    runs: Sequence[str] = ()  # Fig. 15: train.py output folders
    labels: Optional[Sequence[str]] = None  # Fig. 15: legend labels of the runs
    config: Optional[str] = None
    scenario: Optional[str] = None  # his_env.scenarios name, under `config` and `overrides`
    overrides: Mapping[str, Any] = field(default_factory=dict)
    episodes: int = DEFAULT_EPISODES
    seed_base: int = DEFAULT_SEED_BASE
    output_dir: Optional[str | Path] = None
    env_factory: Optional[str] = None  # for the baselines (default: a checkpoint's)
    jobs: int = 1  # worker processes for the baselines' episodes


@dataclass
class EvaluationPlan:
    figure: Optional[Figure]
    title: str
    metrics: Sequence[str]
    policies: List[PolicySpec]
    variants: List[Variant]
    base: Dict[str, Any]
    seeds: List[int]
    out_dir: Path
    jobs: int = 1


@dataclass
class CurvesPlan:
    figure: Figure
    curves: List[tuple]
    num_ues: Dict[str, Any]
    warning: str
    out_dir: Path


def default_output_dir(figure: Optional[int]) -> Path:
    return Path("results") / (f"fig{figure}" if figure else "eval")


def base_env_config(config: Optional[str], overrides: Mapping[str, Any],
                    policies: Sequence[PolicySpec], scenario: Optional[str] = None) -> Dict[str, Any]:
    """The env every variant starts from (see EvaluationRequest), as a validated plain dict: the
    env keys of configs/default.yaml overlaid by `scenario` (a name) and `config` (a path or a
    shipped name), else the first checkpoint's env; then `overrides`."""
    trained = [p.env_config for p in policies if p.env_config is not None]
    if trained and not config and not scenario:
        cfg = HISConfig.from_dict(trained[0])
    else:
        cfg = load_run_config([config] if config else [], scenario=scenario).env
    if overrides:
        cfg = cfg.with_overrides(dict(overrides))
    return cfg.to_dict()


def prepare_curves(request: EvaluationRequest, figure: Figure, out_dir: Path) -> CurvesPlan:
    if not request.runs:
        raise ExperimentError("--figure 15 needs --runs RUN_DIR [RUN_DIR ...] (train.py output folders)")
    if request.labels is not None and len(request.labels) != len(request.runs):
        raise ExperimentError(f"--labels has {len(request.labels)} entries but --runs has {len(request.runs)}")
    labels = list(request.labels) if request.labels else [Path(r).name for r in request.runs]
    if len(set(labels)) != len(labels):
        raise ExperimentError(f"runs need distinct labels, got {labels}; give --labels")
    curves, configs = [], {}
    for label, run in zip(labels, request.runs):
        try:
            xs, ys = fig15.read_run_curve(Path(run))
        except ValueError as exc:
            raise ExperimentError(str(exc)) from None
        curves.append((label, xs, ys))
        configs[label] = fig15.run_env_config(Path(run))
    num_ues = {label: cfg.get("num_ues") for label, cfg in configs.items()}
    warning = fig15.mixed_env_warning(fig15.env_differences(configs))
    return CurvesPlan(figure, curves, num_ues, warning, out_dir)


def prepare(request: EvaluationRequest) -> EvaluationPlan | CurvesPlan:
    """The checked plan of `request`; raises (ExperimentError, ConfigError, CheckpointError,
    EnvFactoryError) with a message naming the bad value and what is allowed."""
    figure = None
    if request.figure is not None:
        try:
            figure = get_figure(request.figure)
        except ValueError as exc:
            raise ExperimentError(f"--figure: {exc}") from None
    if int(request.episodes) < 1:
        raise ExperimentError(f"episodes has value {request.episodes!r}; allowed: an integer >= 1")
    if isinstance(request.jobs, bool) or not isinstance(request.jobs, int) or request.jobs < 1:
        raise ExperimentError(f"jobs has value {request.jobs!r}; allowed: an integer >= 1")
    if int(request.seed_base) < 0:
        raise ExperimentError(f"seed base has value {request.seed_base!r}; allowed: an integer >= 0")
    out_dir = Path(request.output_dir) if request.output_dir else default_output_dir(request.figure)
    if figure is not None and figure.kind == "curves":
        return prepare_curves(request, figure, out_dir)
    if request.env_factory is not None:
        check_env_factory(request.env_factory, "--env-factory")
    policies = checkpoint_policies(request.checkpoints)
    base = base_env_config(request.config, request.overrides, policies, request.scenario)
    factory = request.env_factory or next((p.env_factory for p in policies if p.env_factory), None)
    try:
        policies += baseline_policies(request.baselines, StepRanges.from_env_config(base), request.seed_base, factory)
    except ValueError as exc:
        raise ExperimentError(f"--policy: {exc}") from None
    if not policies:
        raise ExperimentError("nothing to evaluate: give --checkpoint PATH and/or --policy "
                              "random|iis-fixed|fixed:X,Y|search|search:SWEEPS (or --figure 15 --runs ...)")
    if figure is not None:
        variants, metrics, title = figure.variants(base), figure.metrics, figure.title
    else:
        variants = [Variant("base", {}, "base config")]
        metrics = METRICS
        title = f"N = {base.get('num_ues')}, scheme {base.get('scheme', {}).get('name')}"
    check_grid(policies, variants, base)
    seeds = [int(request.seed_base) + i for i in range(int(request.episodes))]
    return EvaluationPlan(figure, title, metrics, policies, variants, base, seeds, out_dir, int(request.jobs))


def execute(plan: EvaluationPlan | CurvesPlan, log: Callable[[str], None] = print) -> Report:
    """Run a prepared plan and write its results folder; returns what was written."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(plan, CurvesPlan):
        report = write_curves_report(plan.curves, plan.num_ues, plan.warning, plan.out_dir)
        title = "Fig. 15: reward curves (5-iteration moving average)"
        curves = plan.curves
        if len({str(n) for n in plan.num_ues.values()}) > 1:  # say each run's N in the legend too
            curves = [(f"{label} (N = {plan.num_ues[label]})", xs, ys) for label, xs, ys in curves]
        report.files.append(save_png(curves_figure(curves, title), plan.out_dir / "fig15.png"))
        return report
    seeds = plan.seeds
    log(f"{plan.title}: {len(plan.policies)} policies x {len(plan.variants)} variants x {len(seeds)} episodes "
        f"(seeds {seeds[0]}..{seeds[-1]}), N = {plan.base.get('num_ues')}")
    rows = run_grid(plan.policies, plan.variants, plan.base, seeds, log, plan.jobs)
    report = write_grid_report(rows, plan.figure, plan.metrics, plan.title, seeds, plan.base.get("num_ues"),
                               plan.out_dir)
    figure = plan.figure
    png = plan.out_dir / (f"fig{figure.number}.png" if figure else "eval.png")
    fig = figure_for(figure.kind if figure else "bars", report.summary, plan.metrics, plan.title,
                     figure.x_label if figure else "")
    report.files.append(save_png(fig, png))
    return report


def run_evaluation(request: EvaluationRequest, log: Callable[[str], None] = print) -> Report:
    """`execute(prepare(request))`: everything is checked before the first episode."""
    return execute(prepare(request), log)
