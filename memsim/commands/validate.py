"""memsim validate: price measured ops with memsim's cost models and report the errors.

    memsim validate MEASURED --hw HW.yaml [--format F] [--held-out] [--json] [--html FILE]
    memsim validate real WORKLOAD --device cpu [--config KEY=VALUE] [--hw CALIBRATED.yaml] [--json] [--html FILE]
"""
from __future__ import annotations

from memsim.errors import MemsimError


def add_parser(commands) -> None:
    validate = commands.add_parser("validate", help="compare memsim's op costs with measured times")
    validate.add_argument("target", nargs="+", metavar="MEASURED | real WORKLOAD",
                          help="a measured file (kineto, vidur-mlp, vidur-attention, vidur-collective, llmcompass, "
                               "tracelens-gemm), or 'real WORKLOAD' to run a workload on this machine")
    validate.add_argument("--hw", help="hardware YAML (calibrated or datasheet); for 'real' default: calibrate now")
    validate.add_argument("--format", help="format of MEASURED (default: detected)")
    validate.add_argument("--held-out", action="store_true",
                          help="report only the sizes that calibrate --fit-half did not fit on")
    validate.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="'real': where to run")
    validate.add_argument("--phase", default="prefill", choices=["prefill", "decode"], help="'real': step phase")
    validate.add_argument("--batch", type=int, default=1)
    validate.add_argument("--context", type=int, default=64)
    validate.add_argument("--config", action="append", metavar="KEY=VALUE",
                          help="'real': override a workload config key (a larger model than the tiny config)")
    validate.add_argument("--json", action="store_true", help="print the result as JSON")
    validate.add_argument("--html", metavar="FILE", help="write a plotly report")
    validate.set_defaults(func=cmd_validate)


def cmd_validate(args) -> int:
    from memsim.hardware import load_system
    from memsim.validate.measure import stderr_progress
    from memsim.validate.report import format_result, predict, to_json, validation_result, write_html

    if args.target[0] == "real":
        if len(args.target) != 2:
            raise MemsimError("usage: memsim validate real WORKLOAD --device cpu")
        from memsim.commands.common import key_values
        from memsim.validate.real import measure_workload

        overrides = key_values(args.config, "--config")
        system = _real_system(args, stderr_progress)
        priced = predict(measure_workload(args.target[1], args.device, args.phase, args.batch, args.context,
                                          stderr_progress, overrides), system)
        configured = "".join(f", {key}={value}" for key, value in overrides.items())
        source = (f"{args.target[1]} ({args.phase}, batch {args.batch}, context {args.context}{configured}) "
                  f"run on {args.device}")
    else:
        if len(args.target) != 1:
            raise MemsimError(f"expected one measured file, got {len(args.target)}: {' '.join(args.target)}")
        if not args.hw:
            raise MemsimError("validate MEASURED needs --hw HW.yaml")
        from memsim.cost.model import LINK_CATEGORIES
        from memsim.validate.fit import calibration_half
        from memsim.validate.readers import read_measured

        system = load_system(args.hw)
        data = read_measured(args.target[0], args.format)
        if "skipped" in data.meta:
            stderr_progress(f"{args.target[0]}: left out {data.meta['skipped']}")
        switched = any(link.joins_copies for link in system.links.values())
        if data.ops["category"].isin(LINK_CATEGORIES).any() and not switched:
            stderr_progress(f"{args.hw}: no link joins copies of a device, so collectives cross the first "
                            f"host link; a node config (e.g. nvidia-hgx-h100-8gpu) prices them over its switch")
        # priced whole, then halved: a trace's power state follows every op that ran
        priced = predict(data.ops, system)
        if args.held_out:
            priced = priced[~calibration_half(priced["size"])].reset_index(drop=True)
        source = args.target[0]
    result = validation_result(priced, source, system.name)
    print(to_json(result) if args.json else format_result(result))
    if args.html:
        path = write_html(priced, result, args.html)
        if not args.json:
            print(f"report written to {path}")
    return 0


def _real_system(args, progress):
    """The calibrated config given, or one measured now (calibrate --device) when none is."""
    from memsim.commands.calibrate import calibrate_this_machine, write_measured
    from memsim.hardware import load_system
    import tempfile

    if args.hw:
        return load_system(args.hw)
    machine = calibrate_this_machine(args.device, None, progress)
    with tempfile.TemporaryDirectory() as folder:
        return load_system(write_measured(machine, f"{folder}/calibrated.yaml"))
