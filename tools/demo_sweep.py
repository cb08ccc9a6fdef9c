"""The demo's settings, chosen on the validation split (never on the test walks), and the
seed tables of docs/TRAINING.md, from one command.

    python tools/demo_sweep.py --out sweep_out                      # the demo's JSLA knobs (KNOBS)
    python tools/demo_sweep.py --out lr --model posenet --knob train.lr=5e-4 --knob train.lr=1e-3 --seeds 1
    python tools/demo_sweep.py --out seeds --model posenet --no-knobs --seeds 3   # the demo's settings, 3 seeds

Every variant changes one setting of the demo's run config (``jsla_fast.demo.DEFAULT``,
``demo_config``); it and the demo's settings themselves ("demo") are trained with ``--seeds``
training seeds (s, s + 1, ...) on each of the two demo scenes (scene seeds 0 and 1, rendered as
``make demo`` renders them), one thread per run, ``--parallel`` runs at a time. A run's score is
the validation median position error of its ``best.pt`` (the last 10 % of each training walk, on
which ``train`` selects the checkpoint).

The rule, per variant: the mean of its scores against the demo's decides, unless the two means
differ by no more than the seeds' spread (the mean over both settings and both scenes of the
range of their seeds' scores): a tie keeps the simpler setting (KNOBS names it; for a ``--knob``
of your own, the demo's). The test walks are evaluated too and reported beside, for reading only.
Finished runs are kept (``OUT/<model>/<variant>/scene<S>/seed<T>/result.json``), so an
interrupted sweep continues where it stopped; ``OUT/sweep.json`` and ``OUT/sweep.md`` hold the
tables.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import yaml

SCENES = (0, 1)
#: the demo's knobs that were once chosen on test medians: setting -> the simpler value (kept on a tie)
KNOBS = {
    "model.dropout=0.5": 0.0,
    "model.aux_heads=true": False,
    "data.random_crop=true": False,
    "model.attention_rescale=false": False,  # off: the paper's O = F * alpha, one op less
    "train.grad_clip=null": None,  # no clipping
    "train.epochs=20": 15,  # the cheaper demo
}


def parse_setting(setting: str) -> tuple[tuple[str, ...], object]:
    """``"model.loss.aleatoric=attenuation"`` -> (("model", "loss", "aleatoric"), "attenuation"); the
    value is read as YAML (``null``, ``true``, ``5e-4``)."""
    path, sep, value = setting.partition("=")
    keys = tuple(path.split("."))
    if not sep or len(keys) < 2 or not all(keys):
        raise SystemExit(f"--knob {setting!r}: write SECTION.FIELD=VALUE, e.g. model.dropout=0.5 or train.grad_clip=null "
                         "(several, comma-separated, make one variant)")
    return keys, yaml.safe_load(value)


def parse_variant(variant: str) -> list[tuple[tuple[str, ...], object]]:
    """A variant: one setting, or several separated by commas (``model.dropout=0.5,model.uncertainty=none``)."""
    return [parse_setting(s) for s in variant.split(",")]


def field(plain: dict, keys: tuple[str, ...], variant: str) -> dict:
    """The dict holding ``keys[-1]`` in the plain run config; a name it lacks is an error."""
    for key in keys[:-1]:
        plain = plain.get(key) if isinstance(plain, dict) else None
    if not isinstance(plain, dict) or keys[-1] not in plain:
        raise SystemExit(f"--knob {variant!r}: the run config has no field {'.'.join(keys)}")
    return plain


def _one_or_all(values: dict[str, object]) -> object:
    return next(iter(values.values())) if len(values) == 1 else values


def variant_value(variant: str) -> object:
    """What the variant sets: its one value, or a dict of them by dotted name."""
    return _one_or_all({".".join(k): v for k, v in parse_variant(variant)})


def value_of(variant: str, plain: dict) -> object:
    """The same settings' values in the plain run config ``plain`` (the demo's, for the table)."""
    return _one_or_all({".".join(k): field(plain, k, variant)[k[-1]] for k, _ in parse_variant(variant)})


def run_config(model: str, variants: list[str], seed: int, quick: bool):
    """The demo's run config for ``model`` with ``variants`` applied (validated like a YAML config)."""
    from jsla_fast.config import RunConfig
    from jsla_fast.demo import DEFAULT, QUICK, demo_config

    plain = demo_config(QUICK if quick else DEFAULT, seed, kind=model).to_dict()
    for variant in variants:
        for keys, value in parse_variant(variant):
            field(plain, keys, variant)[keys[-1]] = value
    return RunConfig.from_dict(plain)


def one_run(job: dict) -> dict:
    """Train one variant on one scene with one training seed (one thread); its validation and test scores."""
    import torch

    torch.set_num_threads(1)
    from jsla_fast.checkpoint import read_checkpoint
    from jsla_fast.evaluate import evaluate
    from jsla_fast.train import train

    run = Path(job["run"])
    done = run / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = run_config(job["model"], job["changes"], job["seed"], job["quick"])
    best = train(cfg, job["data"], "7scenes", run / "train", job["model"], device="cpu")
    val = read_checkpoint(best)["extra"]["val"]
    test = evaluate(best, job["data"], "7scenes", run / "eval", overlays=0)
    result = {**{k: job[k] for k in ("model", "variant", "scene", "seed")},
              "val_median_t_m": val["val_median_t_m"], "val_median_r_deg": val["val_median_r_deg"],
              "best_epoch": int(val["epoch"]), "test_median_t_m": test["median_t_m"],
              "test_median_r_deg": test["median_r_deg"]}
    done.write_text(json.dumps(result, indent=2))
    return result


def decide(results: list[dict], variants: list[str], current: dict[str, object],
           simpler: dict[str, object]) -> dict[str, dict]:
    """Per variant: both means, the seeds' spread, and the value the rule adopts (``current``: the
    demo's value of each variant's setting; ``simpler``: the value a tie keeps, else the demo's)."""
    def scores(variant: str) -> list[list[float]]:
        return [[r["val_median_t_m"] for r in results if r["variant"] == variant and r["scene"] == s] for s in SCENES]

    base = scores("demo")
    decisions = {}
    for variant in variants:
        alt = scores(variant)
        mean_base, mean_alt = (statistics.mean(v for vals in s for v in vals) for s in (base, alt))
        spread = statistics.mean(max(v) - min(v) for v in base + alt)
        value = variant_value(variant)
        if abs(mean_alt - mean_base) > spread:
            adopted, why = (value if mean_alt < mean_base else current[variant]), "better"
        else:
            adopted, why = simpler.get(variant, current[variant]), "tie"
        decisions[variant] = {"demo": current[variant], "variant": value, "mean_demo": mean_base,
                              "mean_variant": mean_alt, "spread": spread, "adopted": adopted, "why": why}
    return decisions


def markdown(results: list[dict], variants: list[str], decisions: dict, seeds: int) -> str:
    def cell(variant: str, scene: int, key: str) -> str:
        return " / ".join(f"{r[key]:.3f}" for r in results if r["variant"] == variant and r["scene"] == scene)

    head = " | ".join(f"scene {s}, seeds {', '.join(str(s + i) for i in range(seeds))}" for s in SCENES)
    lines = [f"Validation median position (m) of each run's best.pt:", "",
             f"| variant | {head} | mean | test, for reading only: scene 0 ; scene 1 |",
             "|---" * (len(SCENES) + 3) + "|"]
    for variant in ["demo", *variants]:
        vals = [r["val_median_t_m"] for r in results if r["variant"] == variant]
        tests = " ; ".join(cell(variant, s, "test_median_t_m") for s in SCENES)
        lines.append(f"| {variant} | " + " | ".join(cell(variant, s, "val_median_t_m") for s in SCENES)
                     + f" | {statistics.mean(vals):.3f} | {tests} |")
    if decisions:
        lines += ["", "| setting | demo's value | mean val, demo / variant | seeds' spread | adopted |",
                  "|---|---|---|---|---|"]
        for variant, d in decisions.items():
            lines.append(f"| {variant} | {d['demo']} | {d['mean_demo']:.3f} / {d['mean_variant']:.3f} m | "
                         f"{d['spread']:.3f} m | {d['adopted']} ({d['why']}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="sweep_out")
    ap.add_argument("--model", default="jsla", choices=["jsla", "posenet", "poselstm"])
    ap.add_argument("--knob", action="append", default=[], metavar="SECTION.FIELD=VALUE[,...]",
                    help="a variant to try instead of KNOBS (repeatable), e.g. train.lr=1e-3 or "
                    "model.loss.aleatoric=attenuation; comma-separated settings make one variant")
    ap.add_argument("--no-knobs", action="store_true", help="only the demo's settings (a seed table)")
    ap.add_argument("--seeds", type=int, default=2, help="training seeds per scene (default 2)")
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time, one thread each")
    ap.add_argument("--quick", action="store_true", help="the demo's --quick sizes: checks the sweep in minutes")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jsla_fast.demo import DEFAULT, QUICK, synthetic_scene

    variants = [] if args.no_knobs else args.knob or list(KNOBS)
    simpler = {} if args.knob else KNOBS
    for v in variants:  # bad settings fail here, before anything trains
        run_config(args.model, [v], 0, args.quick)
    out = Path(args.out)
    p = QUICK if args.quick else DEFAULT
    data = {s: str(synthetic_scene(out / f"scene{s}", s, p)) for s in SCENES}
    jobs = [{"model": args.model, "variant": name, "changes": [] if name == "demo" else [name], "scene": s,
             "seed": s + i, "data": data[s], "quick": args.quick,
             "run": str(out / args.model / name / f"scene{s}" / f"seed{s + i}")}
            for name in ["demo", *variants] for s in SCENES for i in range(args.seeds)]
    with ProcessPoolExecutor(args.parallel, mp_context=get_context("spawn")) as pool:
        results = []
        for r in pool.map(one_run, jobs):
            print(json.dumps(r), flush=True)
            results.append(r)
    demo = run_config(args.model, [], 0, args.quick).to_dict()
    current = {v: value_of(v, demo) for v in variants}
    decisions = decide(results, variants, current, simpler)
    text = markdown(results, variants, decisions, args.seeds)
    (out / "sweep.json").write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "results": results,
                                                "decisions": decisions}, indent=2))
    (out / "sweep.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
